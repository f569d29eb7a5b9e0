#!/usr/bin/env bash
# Run every VRRP fuzz target for a bounded time, starting from the committed seed corpus.
#
#   node-agent/fuzz/run.sh [SECONDS_PER_TARGET]     (default 20; CI smoke: 20 × 4 targets)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on the stable toolchain through
# RUSTC_BOOTSTRAP=1. New inputs go to a temporary directory, so the committed corpus is not
# modified. Exits non-zero on the first crash (the reproducer is in fuzz/artifacts/).
set -euo pipefail
secs="${1:-20}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
# VRRPv2 over IPv6 (refused by design) is checked inside parse_v3_ipv6.
targets=(parse_v2_ipv4 parse_v3_ipv4 parse_v3_ipv6 state_machine)
cargo fuzz build -O
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
total=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    log="$work/$t.log"
    if ! cargo fuzz run -O "$t" "$work/$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "FUZZ CRASH in $t (see node-agent/fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1)"
    runs="${runs:-0}"
    total=$((total + runs))
    printf '%-16s %12s executions, no crash\n' "$t" "$runs"
done
printf '%-16s %12s executions, no crash\n' "total" "$total"
