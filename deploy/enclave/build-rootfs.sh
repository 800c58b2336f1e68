#!/usr/bin/env bash
# build-rootfs.sh BUILD_DIR OUT_DIR
#
# Assembles the runtime file tree of the veil enclave image: exactly what
# veil-enclave needs inside a Nitro Enclave and nothing else.
#
#   /usr/local/bin/veil-enclave          the daemon (from BUILD_DIR)
#   <every library `ldd` lists>          at the path ldd prints (symlinks resolved)
#   <the ELF loader>                     e.g. /lib64/ld-linux-x86-64.so.2
#   /etc/ssl/certs/ca-certificates.crt   CA bundle: TLS to bedrock-runtime ends
#                                        inside the enclave, so it verifies there
#   /dev /proc /sys /run /tmp            empty mount points: the enclave's init
#                                        (aws-nitro-enclaves-sdk-bootstrap) mounts
#                                        devtmpfs, proc, sysfs and tmpfs on them
#                                        after chroot and dies if one is missing
#
# No shell, no package manager, no NSS or resolver files: the enclave has no
# network (Bedrock is reached through the parent's CONNECT proxy over vsock, and
# the proxy resolves the name), and veil-enclave execs nothing.
#
# deploy/enclave/Dockerfile runs this same script in its builder stage and copies
# OUT_DIR into a `FROM scratch` image, so the tree checked on a build machine
# (tests/integration/test_deploy.sh chroots into it) is the tree in the EIF.
#
# Environment: VEIL_CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt, from
# Debian's ca-certificates); SOURCE_DATE_EPOCH, when set, stamps every file with
# that time (reproducible image layers, hence stable PCR0/PCR2).
set -euo pipefail

prog=build-rootfs.sh
die() { echo "$prog: $*" >&2; exit 1; }

if [[ $# -ne 2 || $1 == -h || $1 == --help ]]; then
    echo "usage: $prog BUILD_DIR OUT_DIR   (BUILD_DIR holds a built veil-enclave)" >&2
    [[ $# -eq 1 && ($1 == -h || $1 == --help) ]] && exit 0
    exit 2
fi
build_dir=$1
out=$2
bin=$build_dir/veil-enclave
ca=${VEIL_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

[[ -f $bin && -x $bin ]] || die "$bin: not found or not executable (build it: ninja -C $build_dir veil-enclave)"
[[ -s $ca ]] || die "$ca: CA bundle missing (install the ca-certificates package or set VEIL_CA_BUNDLE)"
command -v ldd >/dev/null || die "ldd not found (it is part of libc-bin)"
if [[ -e $out ]] && [[ -n $(ls -A "$out") ]]; then
    die "$out exists and is not empty: refusing to mix old files into the image"
fi

# The libraries and the loader, as the dynamic linker resolves them on this
# machine. Lines look like:
#   libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)
#   /lib64/ld-linux-x86-64.so.2 (0x...)
#   linux-vdso.so.1 (0x...)                  (in the kernel: nothing to copy)
#   libfoo.so.1 => not found                 (fatal)
libs=()
if ldd_out=$(ldd "$bin" 2>&1); then
    while read -r line; do
        [[ -z $line ]] && continue
        if [[ $line == *"=> not found"* ]]; then
            die "ldd: ${line%% *} not found: install the runtime library first"
        elif [[ $line =~ =\>\ (/[^ ]+)\ \( ]]; then
            libs+=("${BASH_REMATCH[1]}")
        elif [[ $line =~ ^(/[^ ]+)\ \( ]]; then
            libs+=("${BASH_REMATCH[1]}")
        elif [[ $line == linux-vdso* || $line == linux-gate* ]]; then
            continue
        else
            die "ldd: cannot parse: $line"
        fi
    done <<< "$ldd_out"
elif [[ $ldd_out == *"not a dynamic executable"* || $ldd_out == *"statically linked"* ]]; then
    : # static binary: no libraries, no loader
else
    die "ldd $bin failed: $ldd_out"
fi

mkdir -p "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" \
         "$out/dev" "$out/proc" "$out/sys" "$out/run" "$out/tmp"
chmod 0755 "$out" "$out/usr" "$out/usr/local" "$out/usr/local/bin" "$out/etc" \
           "$out/etc/ssl" "$out/etc/ssl/certs" "$out/dev" "$out/proc" "$out/sys" "$out/run"
chmod 1777 "$out/tmp"

install -m 0755 "$bin" "$out/usr/local/bin/veil-enclave"
install -m 0644 "$ca" "$out/etc/ssl/certs/ca-certificates.crt"   # install(1) follows symlinks
for lib in "${libs[@]}"; do
    dest=$out$lib
    mkdir -p "$(dirname "$dest")"
    # -L: a library path is often a symlink (SONAME -> real file, or /lib -> usr/lib);
    # the image gets a regular file at exactly the path the loader asks for.
    cp -L "$lib" "$dest"
    chmod 0755 "$dest"
done
# every directory created for the libraries: 0755, whatever the umask
find "$out" -type d ! -path "$out/tmp" -exec chmod 0755 {} +

if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
    find "$out" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
fi

echo "$prog: $out: veil-enclave, ${#libs[@]} libraries and loader, CA bundle"
(cd "$out" && find . -type f | LC_ALL=C sort | sed 's|^\.|  |')
