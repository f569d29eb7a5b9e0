#!/usr/bin/env bash
# Fuzz the keepalived.conf reader. Usage: node-agent/keepalived/fuzz/run.sh [SECONDS] (default 60).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); uses the stable toolchain via RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
mkdir -p corpus/parse
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run parse corpus/parse seeds/parse -- -max_total_time="$secs" -max_len=8192 -timeout=10
