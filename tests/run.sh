#!/usr/bin/env bash
# Runs every check and test of kube-vrrp: formatting, lints, unit and integration tests
# (network-namespace tests need root; without it they report themselves SKIPPED), the fuzz
# smoke runs and the offline install checks. Installs missing tools when run as root and
# otherwise says exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
start=$(date +%s)

# Disk use is printed at every step: CI's disk is small (a run once filled it while linking).
step() { printf '\n==> %s   [disk free: %s]\n' "$*" "$(df -h --output=avail . | tail -1 | tr -d ' ')"; }
# Incremental caches only help repeated local builds; off, the target dir is about a third smaller.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "system tools"
bash tests/tools/install-deps.sh
for installer in tests/tools/install-helm.sh; do
  [ -f "$installer" ] && bash "$installer"
done
export PATH="$root_dir/tests/tools/bin:$PATH"

# Which tests can run here. Those that cannot are left out of the nextest run, and nextest's
# summary counts them as "skipped" (run alone, such a test prints SKIPPED and fails).
nextest_args=()
excluded=()
if [ "$(id -u)" -ne 0 ]; then
  nextest_args+=(--profile no-root)
  cat >&2 <<'TXT'
NOTE: not running as root. Tests that need root (network namespaces: VRRP on the wire,
keepalived interop, netlink; the demo; the container image tests) are left out and counted as
SKIPPED in the test summary (nextest profile `no-root`, tests/nextest.toml). Run as root to run them.
TXT
elif docker info >/dev/null 2>&1; then
  # The image tests: kube-vrrp:dev and the keepalived peer, on bases cached by digest under
  # /var/cache/kube-vrrp-image (the first build takes a few minutes, later ones seconds).
  step "container images (deploy/build-image.sh)"
  bash deploy/build-image.sh
  bash deploy/build-image.sh --keepalived-peer
  # The images hold the release binaries now; their intermediate build files only take disk.
  rm -rf target/release/deps target/release/build target/release/.fingerprint
else
  excluded+=('(package(kube-vrrp-tests) & binary(=image))')
  echo "NOTE: no Docker daemon answers: the container image tests are left out (SKIPPED in the summary)." >&2
fi
# Tests against a real kube-apiserver (envtest convention): they need KUBEBUILDER_ASSETS naming
# a directory with kube-apiserver and etcd.
# They measure status lag against deadlines, so they run on their own after the main run (which
# leaves them out and counts them as skipped there).
excluded+=('(package(kube-vrrp-tests) & binary(/^api/))')
api_server=no
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "${KUBEBUILDER_ASSETS}/kube-apiserver" ] \
   && [ -x "${KUBEBUILDER_ASSETS}/etcd" ] && [ "$(id -u)" -eq 0 ]; then
  api_server=yes
else
  echo "NOTE: SKIPPED: no API server (set KUBEBUILDER_ASSETS, run as root): the real-API-server tests are left out (SKIPPED in the summary)." >&2
fi
if [ ${#excluded[@]} -gt 0 ]; then
  joined=$(IFS='|'; echo "${excluded[*]}")
  nextest_args+=(-E "not ($joined)")
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# nextest is required: it is what reports the tests that cannot run here as skipped.
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --locked --no-fail-fast --config-file tests/nextest.toml \
  ${nextest_args[@]+"${nextest_args[@]}"}
if [ "$api_server" = yes ]; then
  step "tests against a real API server ($KUBEBUILDER_ASSETS), one at a time"
  cargo nextest run -p kube-vrrp-tests --locked --no-fail-fast --config-file tests/nextest.toml \
    -E 'binary(/^api/)'
fi
# nextest does not run doctests
cargo test --workspace --locked --doc

# Fuzz smoke runs (about 2 minutes in all): every decoder and the state machine, then the
# keepalived.conf reader. cargo-fuzz runs on the stable toolchain through RUSTC_BOOTSTRAP=1.
step "fuzz smoke"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
# The test binaries are no longer needed: free their disk for the instrumented fuzz build.
rm -rf "$root_dir/target/debug/deps" "$root_dir/target/debug/build" "$root_dir/target/debug/.fingerprint"
# Both fuzz crates share one instrumented build of the common dependencies.
export CARGO_TARGET_DIR="$root_dir/target/fuzz"
bash node-agent/fuzz/run.sh 12
bash node-agent/keepalived/fuzz/run.sh 40
unset CARGO_TARGET_DIR

step "all checks passed in $(( $(date +%s) - start ))s"
