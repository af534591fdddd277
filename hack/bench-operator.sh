#!/usr/bin/env bash
# The operator scale run (internal/opbench) on a kwok control plane, once
# per N in BENCH_OPERATOR_N (default 100; "100 500" measures both), and the
# markdown section with one column per N.
#
# Usage: hack/bench-operator.sh <markdown-out> [json-dir]
#
# Environment:
#   BENCH_OPERATOR_N          CollabCluster counts, space-separated (default 100)
#   BENCH_OPERATOR_UNRELATED  unrelated Secrets and Pods for the memory check (default 5000; 0 skips)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:?usage: $0 <markdown-out> [json-dir]}
NS=${BENCH_OPERATOR_N:-100}
UNRELATED=${BENCH_OPERATOR_UNRELATED:-5000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench-operator.XXXXXX")
JSON_DIR=${2:-$WORK}
trap 'rm -rf "$WORK"' EXIT

log() { printf '== %s\n' "$*" >&2; }

log "building the kube tools (hack/tools.sh), the operator and tandem-bench"
hack/tools.sh install kube-apiserver etcd kube-controller-manager kube-scheduler kwok kwokctl kubectl >&2
mkdir -p "$WORK/bin" "$JSON_DIR"
CGO_ENABLED=0 nice go build -trimpath -o "$WORK/bin/manager" ./cmd/manager
nice go build -o "$WORK/bin/tandem-bench" ./cmd/tandem-bench

files=()
for n in $NS; do
	log "operator scale run: N=$n"
	"$WORK/bin/tandem-bench" operator --n "$n" --root "$ROOT" --manager "$WORK/bin/manager" \
		--unrelated "$UNRELATED" --out "$JSON_DIR/operator-$n.json" >/dev/null
	files+=("$JSON_DIR/operator-$n.json")
done
"$WORK/bin/tandem-bench" operator-report "${files[@]}" >"$OUT"
log "wrote $OUT"
