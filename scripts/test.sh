#!/usr/bin/env bash
# The project's test command (README.md "Running the tests"; CI runs it through .ci/run).
# Installs what the tests need when it is missing; with CI=true a missing tool is an error,
# never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings denied)"
cargo clippy --all-targets --all-features -- -D warnings

step "tests (all features)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-features --no-fail-fast
else
  cargo test --all-features --lib --bins --tests --examples
fi

step "doctests"
cargo test --all-features --doc

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

if [ -d benches ] && ls benches/*.rs >/dev/null 2>&1; then
  step "benches build"
  cargo bench --all-features --no-run
fi

echo
echo "all checks passed"
