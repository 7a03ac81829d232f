#!/usr/bin/env bash
# Installs what the tests and the demo need on Debian 12 (bookworm), idempotently:
#   - a JRE and Apache ZooKeeper 3.8 (Debian's `zookeeper` package: /usr/share/java/zookeeper.jar)
#   - promtool (Debian's `prometheus` package), which lints the tests' /metrics scrapes
#   - checks that a Rust toolchain (cargo) is present; it is NOT installed from here.
# Nothing else is needed: the scripts talk to ZooKeeper through bash's /dev/tcp (no nc).
set -euo pipefail

ZOOKEEPER_JAR_PATH=${ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}

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
