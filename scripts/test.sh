#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors) and the whole test suite.
# Integration tests start real standalone ZooKeeper servers on loopback by themselves.
# Extra arguments go to `cargo test`, e.g. `bash scripts/test.sh --test sync`.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" ;; esac

section() { printf '\n==== %s ====\n' "$*"; }

# Incremental caches double the size of target/ and buy nothing on a one-off build; a CI disk
# once ran full. Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
disk() { df -Ph "${CARGO_TARGET_DIR:-.}" 2>/dev/null | awk 'NR==2 {print "disk: " $4 " free on " $6}' || true; }

section "Dependencies (java, ZooKeeper, cargo)"
bash scripts/install-deps.sh

for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "ERROR: \`cargo $tool\` is not available; add it with \`rustup component add $([ "$tool" = fmt ] && echo rustfmt || echo clippy)\`" >&2
        exit 1
    fi
done

section "cargo fmt --all -- --check"
cargo fmt --all -- --check

disk
section "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "Layers: no Kubernetes crate under resiliency-core or verifier"
# The compiler keeps Kubernetes out of these crates' sources; this keeps it out of their
# manifests too.
tree=$(cargo tree -e normal -p resiliency-core -p verifier --prefix none)
if grep -E '^(kube|k8s-openapi)( |-)' <<<"$tree"; then
    echo "ERROR: resiliency-core or verifier depends on a Kubernetes crate (above)" >&2
    exit 1
fi

disk
section "cargo test --workspace $*"
cargo test --workspace "$@"

disk
section "All checks passed"
