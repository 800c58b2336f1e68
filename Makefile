# veil — the two commands users need: `make run` and `make test`.
# Both install missing Debian packages first (scripts/install-deps).

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc)
CMAKE_GEN   = -G Ninja

FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 10
FUZZ_RUNS    ?= 10000000

.PHONY: all deps build build-asan build-tsan test test-plain test-asan test-tsan run bench soak fuzz-build fuzz fuzz-long clean

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

# the libFuzzer targets alone (clang, coverage, ASan+UBSan)
fuzz-build: deps
	cmake -S . -B $(FUZZ_BUILD) $(CMAKE_GEN) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DVEIL_FUZZ=ON >/dev/null
	@ninja -C $(FUZZ_BUILD) -j $(JOBS) fuzzers

# each target for FUZZ_SECONDS from the committed corpus, seeds and dictionary (CI);
# what it finds stays in $(FUZZ_BUILD)/fuzz-work/ (scripts/fuzz)
fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz short $(FUZZ_BUILD)

# each target until FUZZ_RUNS executions, niced, one at a time, then minimized into
# fuzz/corpus/<target>/ (commit it)
fuzz-long: fuzz-build
	@FUZZ_RUNS=$(FUZZ_RUNS) scripts/fuzz long $(FUZZ_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
