# veil — the two commands users need: `make run` and `make test`.
# Both install missing Debian packages first (scripts/install-deps).

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc)
CMAKE_GEN   = -G Ninja

FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all deps build build-asan build-tsan test test-plain test-asan test-tsan run bench soak fuzz clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DVEIL_SANITIZE=ON >/dev/null

$(TSAN_BUILD)/build.ninja:
	cmake -S . -B $(TSAN_BUILD) $(CMAKE_GEN) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DVEIL_TSAN=ON >/dev/null

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD) -j $(JOBS)

build-asan: deps $(ASAN_BUILD)/build.ninja
	@ninja -C $(ASAN_BUILD) -j $(JOBS)

# plain build (gcc) then ASan+UBSan build (clang), the same tests in both
test: test-plain test-asan

test-plain: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

build-tsan: deps $(TSAN_BUILD)/build.ninja
	@ninja -C $(TSAN_BUILD) -j $(JOBS)

# ThreadSanitizer (clang) on veil-enclave's workers: the enclave's unit tests and
# its integration tests, with 1 and 2 workers; a report fails the test (the
# process's exit status, and the harnesses look for the report in its log)
TSAN_TESTS = unit/enclave/|unit/common/test_log|integration/test_enclave|integration/test_format3
test-tsan: build-tsan
	cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=0:exitcode=66:second_deadlock_stack=1 \
	  ctest --output-on-failure -j $(JOBS) -R '$(TSAN_TESTS)'

test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS)

run: build
	@scripts/run-local $(BUILD)

# every build/bench_* program, then bench/slowdb.py (veild's streams with a slow PostgreSQL)
bench: build
	@for b in $(BUILD)/bench_*; do [ -x "$$b" ] && "$$b"; done; true
	@python3 bench/slowdb.py $(BUILD) || true

# the whole stack under load with injected faults (SOAK_SECONDS, SOAK_CONCURRENCY, ...);
# fails on an unexpected error or a dead process
soak: build
	@scripts/soak $(BUILD)

# each libFuzzer target for FUZZ_SECONDS, corpora in fuzz/corpus-<name>/
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) $(CMAKE_GEN) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DVEIL_FUZZ=ON >/dev/null
	@ninja -C $(FUZZ_BUILD) -j $(JOBS)
	@for f in $(FUZZ_BUILD)/fuzz_*; do \
	  n=$$(basename $$f); mkdir -p fuzz/corpus-$$n; \
	  echo "== $$n ($(FUZZ_SECONDS) s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/ -print_final_stats=1 \
	    fuzz/corpus-$$n > fuzz/$$n.log 2>&1 || { tail -40 fuzz/$$n.log; exit 1; }; \
	  tail -3 fuzz/$$n.log; \
	done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
