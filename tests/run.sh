#!/usr/bin/env bash
# Runs every check and test of kube-vrrp: formatting, lints, unit and integration tests
# (network-namespace tests need root; without it they report themselves SKIPPED), the fuzz
# smoke runs and the offline install checks. Installs missing tools when run as root and
# otherwise says exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
start=$(date +%s)

step() { printf '\n==> %s\n' "$*"; }

step "system tools"
bash tests/tools/install-deps.sh
for installer in tests/tools/install-helm.sh; do
  [ -f "$installer" ] && bash "$installer"
done
export PATH="$root_dir/tests/tools/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  cat >&2 <<'TXT'
NOTE: not running as root. Tests that build network namespaces (VRRP on the wire, keepalived
interop, netlink) will print "SKIPPED: ... needs root" and not run. Run as root to run them.
TXT
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --config-file tests/nextest.toml
  # nextest does not run doctests
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

# Fuzz smoke runs (about 2 minutes in all): every decoder and the state machine, then the
# keepalived.conf reader. cargo-fuzz runs on the stable toolchain through RUSTC_BOOTSTRAP=1.
step "fuzz smoke"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
# Both fuzz crates share one instrumented build of the common dependencies.
export CARGO_TARGET_DIR="$root_dir/target/fuzz"
bash node-agent/fuzz/run.sh 12
bash node-agent/keepalived/fuzz/run.sh 40
unset CARGO_TARGET_DIR

step "all checks passed in $(( $(date +%s) - start ))s"
