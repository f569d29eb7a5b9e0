#!/usr/bin/env bash
# Runs every benchmark behind tests/bench/RESULTS.md (root; several minutes; not part of CI).
# Results land in target/bench/; the chart in tests/bench/failover.png.
#   REPS=20 REPS_1S=20 tests/bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-20}
REPS_1S=${REPS_1S:-$REPS}
OUT=target/bench

cargo build --release -p kube-vrrp-agent
cargo build -p kube-vrrp-tests --bin failover-bench --bin advert-jitter
cargo build -p kube-vrrp-tests --features chart --bin bench-chart
export KUBE_VRRP_AGENT_BIN=$PWD/target/release/kube-vrrp-agent

mkdir -p "$OUT/fast" "$OUT/slow" "$OUT/wide"
./target/debug/failover-bench --reps "$REPS" --intervals 100,20 --no-footprint --csv "$OUT/fast"
./target/debug/failover-bench --reps "$REPS_1S" --intervals 1000 --csv "$OUT/slow"
./target/debug/failover-bench --no-failover --instances 1000,4000 --csv "$OUT/wide"
./target/debug/advert-jitter --reps 10 --csv "$OUT"
# Bulk takeover: every VIP of one instance announced after a failover (2,000 IPv6: 89
# advertised, the rest excluded; 508 IPv4: 255 advertised).
mkdir -p "$OUT/bulk6" "$OUT/bulk4"
./target/debug/advert-jitter --reps 5 --vips 2000 --ipv6 --csv "$OUT/bulk6"
./target/debug/advert-jitter --reps 5 --vips 508 --csv "$OUT/bulk4"

# One failover CSV for the chart: the 1 s run first, then the fast one without its header.
cat "$OUT/slow/failover.csv" > "$OUT/failover.csv"
tail -n +2 "$OUT/fast/failover.csv" >> "$OUT/failover.csv"
./target/debug/bench-chart --csv "$OUT/failover.csv" --out tests/bench/failover.png

cargo bench -p kube-vrrp-operator --bench plan
# Operator at scale on a real API server (KUBEBUILDER_ASSETS; skipped without it).
cargo build --release -p kube-vrrp-operator
cargo build -p kube-vrrp-tests --bin operator-scale-bench
./target/debug/operator-scale-bench --operator-bin target/release/kube-vrrp-operator || true
# Agent in Kubernetes mode next to standalone, 255 instances (KUBEBUILDER_ASSETS; skipped without it).
cargo build --release -p kube-vrrp-agent -p kube-vrrp-operator -p kube-vrrp-tests --bin agent-k8s-footprint
KUBE_VRRP_AGENT_BIN=$PWD/target/release/kube-vrrp-agent KUBE_VRRP_OPERATOR_BIN=$PWD/target/release/kube-vrrp-operator \
  ./target/release/agent-k8s-footprint --rounds 2 --csv "$OUT/k8s-footprint" || true
