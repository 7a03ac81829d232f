# Convenience recipes (https://github.com/casey/just). Every recipe is a plain command you can
# also type yourself.

# List the recipes.
default:
    @just --list

# Format the workspace.
fmt:
    cargo fmt --all

# Lint the workspace; warnings are errors.
clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI runs: fmt check, clippy, all tests (extra args go to `cargo test`).
test *ARGS:
    bash scripts/test.sh {{ARGS}}

# Two local ZooKeeper servers, a sample tree, sync + verify end to end.
demo:
    bash scripts/demo.sh

# Copy and verify rates against real ZooKeeper servers.
bench:
    cargo bench --bench copy

# Regenerate crds/ from the Rust types.
generate:
    cargo run -q -- crd --output-dir crds
