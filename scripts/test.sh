#!/usr/bin/env bash
# The project's test command (README.md "Running the tests"; CI runs it through .ci/run).
# Installs what the tests need when it is missing; with CI=true a missing tool is an error,
# never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A tool the tests need is missing and cannot be installed: fail under CI, warn loudly
# (and skip that part) on a developer's machine.
missing() {
  if [ "${CI:-}" = "true" ]; then
    echo "ERROR: $*" >&2
    exit 1
  fi
  echo "WARNING: $* -- SKIPPING that part (it is required when CI=true)" >&2
}

apt_updated=""
# ensure COMMAND PACKAGE: install PACKAGE with apt-get when COMMAND is missing.
ensure() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing $2 (for $1)"
    if [ -z "$apt_updated" ]; then apt-get update -q >/dev/null && apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null || true
  fi
  command -v "$1" >/dev/null 2>&1
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings denied)"
cargo clippy --all-targets --all-features -- -D warnings

step "tools the tests need"
# The Redis backplane tests start their own redis-server on a free port.
ensure redis-server redis-server || missing "redis-server is not installed and could not be installed (apt-get install redis-server)"

step "tests (all features)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-features --no-fail-fast
else
  cargo test --all-features --lib --bins --tests --examples
fi

step "loom models of the hub: park/wake (src/hub/wait.rs), cursors, shutdown, rejoin (src/hub/loom_model.rs)"
# Its own cfg name and target dir: tokio compiles its networking out under `cfg(loom)`, and
# the flag would otherwise rebuild everything in the main target dir.
RUSTFLAGS="--cfg wshub_loom" CARGO_TARGET_DIR=target/loom cargo test --lib --release loom_model

step "doctests"
cargo test --all-features --doc

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

step "browser test: the chat page in headless Chromium"
if ensure chromium chromium && ensure node nodejs && ensure npm npm; then
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
  fi
  cargo build --example chat
  CHAT_BIN="$PWD/target/debug/examples/chat" CHROMIUM="$(command -v chromium)" \
    node --test tests/browser/
else
  missing "chromium, node or npm is not installed and could not be installed"
fi

step "load generator smoke run (chat example, 20 clients)"
bash scripts/loadgen_smoke.sh

if [ -d benches ] && ls benches/*.rs >/dev/null 2>&1; then
  step "benches build"
  cargo bench --all-features --no-run
fi

echo
echo "all checks passed"
