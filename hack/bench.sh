#!/usr/bin/env bash
# make bench: start throwaway Redis and PostgreSQL and four tandem-runtime
# processes on free loopback ports, run the load scenarios (cmd/tandem-bench)
# and the Go micro-benchmarks, compare the micro-benchmark runs with
# benchstat and write docs/benchmarks.md.
#
# Processes:
#   replica A, replica B  distributed mode (same Redis and PostgreSQL): S1, S1-spread,
#                         S1-colocated, S2 (+S5), S2-colocated, S4
#   single                embedded mode (SQLite): S1-single, S2-single
#   idle                  embedded mode, fresh: S3 (its memory baseline is an unused process)
#
# Knobs (environment):
#   BENCH_RUNS          runs of every scenario, medians reported (default 3)
#   BENCH_S4_DOCS       S4 documents (default 200; the issue's full size is 1000)
#   BENCH_S4_DURATION   S4 duration (default 20s; full size 30s)
#   BENCH_S3_CONNS      S3 connections (default 2000)
#   BENCH_COUNT         go test -count for the micro-benchmarks (default 6)
#   BENCH_OPERATOR_N    CollabClusters of the operator scale run on kwok (default 100; "100 500" for both)
#   BENCH_OPERATOR_UNRELATED  unrelated Secrets and Pods for its memory check (default 5000; 0 skips)
#   BENCH_OUT           document to write (default docs/benchmarks.md)
#   BENCH_ARGS          extra flags for `tandem-bench run` (e.g. --s2-duration 5s)
#   BENCH_KEEP          keep the work directory (logs, raw results) when set
#   BENCH_PROFILE       directory to write pprof profiles into (created); unset: no profiles
#   TANDEM_TOOLS_DIR    cache of built tools (benchstat), as in hack/tools.sh
#
# Profiles: BENCH_PROFILE=/tmp/prof make bench starts every runtime with
# --debug-addr and has tandem-bench fetch, during the first run only, a CPU
# profile of each runtime S1, S1-spread, S1-colocated, S2, S2-colocated,
# S2-single and S4 drive, for about the
# scenario's load duration (<scenario>-<runtime>.cpu.pprof, runtimes A, B,
# single), and a heap profile of the idle runtime with S3's connections open
# (S3-idle.heap.pprof). Read them with `go tool pprof -top FILE`: they carry
# their symbols, so the binaries (deleted with the work directory) are not
# needed. docs/development.md has more.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=""
if [[ -n ${BENCH_PROFILE:-} ]]; then
	# Absolute before the cd: a relative BENCH_PROFILE means where make ran.
	mkdir -p "$BENCH_PROFILE"
	PROFILE=$(cd "$BENCH_PROFILE" && pwd)
fi
cd "$ROOT"

RUNS=${BENCH_RUNS:-3}
S4_DOCS=${BENCH_S4_DOCS:-200}
S4_DURATION=${BENCH_S4_DURATION:-20s}
S3_CONNS=${BENCH_S3_CONNS:-2000}
COUNT=${BENCH_COUNT:-6}
OUT=${BENCH_OUT:-docs/benchmarks.md}
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da # golang.org/x/perf
TOOLS_DIR=${TANDEM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/tools}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench.XXXXXX")
chmod 755 "$WORK"
PIDS=()

log() { printf '== %s\n' "$*" >&2; }

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n ${BENCH_KEEP:-} ]]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "make bench needs $1: apt-get install -y $2" >&2
		exit 1
	}
}

pg_bin() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x $d/$1 ]] && { echo "$d/$1"; return; }
	done
	command -v "$1" || { echo "make bench needs PostgreSQL's $1: apt-get install -y postgresql" >&2; exit 1; }
}

need redis-server redis-server
INITDB=$(pg_bin initdb)
POSTGRES=$(pg_bin postgres)
PG_ISREADY=$(pg_bin pg_isready)

# Many sockets: S3 and S4 hold thousands of connections.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "building tandem-runtime and tandem-bench"
mkdir -p "$WORK/bin"
nice go build -o "$WORK/bin/tandem-runtime" ./cmd/tandem-runtime
nice go build -o "$WORK/bin/tandem-bench" ./cmd/tandem-bench
BENCH="$WORK/bin/tandem-bench"
RUNTIME="$WORK/bin/tandem-runtime"

log "building benchstat $BENCHSTAT_VERSION"
BENCHSTAT_DIR="$TOOLS_DIR/benchstat-$BENCHSTAT_VERSION"
if [[ ! -x $BENCHSTAT_DIR/benchstat ]]; then
	mkdir -p "$BENCHSTAT_DIR"
	(cd "$WORK" && GOBIN="$BENCHSTAT_DIR" GOFLAGS=-mod=mod nice go install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION")
fi
BENCHSTAT="$BENCHSTAT_DIR/benchstat"

wait_ready() { # url name logfile
	local i
	for i in $(seq 1 300); do
		if curl -fsS -o /dev/null "$1/readyz" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "$2 not ready at $1; its log:" >&2
	tail -n 40 "$3" >&2
	exit 1
}

log "starting redis-server"
REDIS_PORT=$("$BENCH" freeport)
mkdir -p "$WORK/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" --save "" --appendonly no \
	--protected-mode yes >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

log "starting PostgreSQL"
PG_PORT=$("$BENCH" freeport)
PGDATA="$WORK/pg"
AS_PG=()
if [[ $(id -u) == 0 ]]; then
	# initdb and postgres refuse to run as root.
	id postgres >/dev/null 2>&1 || { echo "running as root needs the postgres OS user (apt-get install -y postgresql)" >&2; exit 1; }
	mkdir -p "$PGDATA" "$WORK/pgsock"
	chown postgres: "$PGDATA" "$WORK/pgsock"
	AS_PG=(runuser -u postgres --)
else
	mkdir -p "$WORK/pgsock"
fi
"${AS_PG[@]}" "$INITDB" -D "$PGDATA" -U postgres -A trust --no-sync >"$WORK/initdb.log" 2>&1
"${AS_PG[@]}" "$POSTGRES" -D "$PGDATA" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
	-c unix_socket_directories="$WORK/pgsock" >"$WORK/postgres.log" 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do
	"$PG_ISREADY" -h 127.0.0.1 -p "$PG_PORT" -q && break
	sleep 0.1
done
"$PG_ISREADY" -h 127.0.0.1 -p "$PG_PORT" -q || { tail -n 40 "$WORK/postgres.log" >&2; exit 1; }
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/jwt.key"
COMMON=(--auth jwt --jwt-key-file "$WORK/jwt.key" --ops-per-second 1000000 --max-conns-per-doc 100000 --log-level warn)

DEBUG=() # with BENCH_PROFILE: name=debug URL of every runtime, for tandem-bench --debug
start_runtime() { # variable name debug-name extra-args...: sets the variable to the base URL
	local var=$1 name=$2 debug_name=$3 port dport
	local debug=()
	shift 3
	port=$("$BENCH" freeport)
	if [[ -n $PROFILE ]]; then
		dport=$("$BENCH" freeport)
		debug=(--debug-addr "127.0.0.1:$dport")
		DEBUG+=("$debug_name=http://127.0.0.1:$dport")
	fi
	"$RUNTIME" --addr "127.0.0.1:$port" "${debug[@]}" "${COMMON[@]}" "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	wait_ready "http://127.0.0.1:$port" "$name" "$WORK/$name.log"
	printf -v "$var" 'http://127.0.0.1:%s' "$port"
}

log "starting the runtimes"
start_runtime A replica-a A --redis-url "$REDIS_URL" --postgres-url "$PG_URL"
start_runtime B replica-b B --redis-url "$REDIS_URL" --postgres-url "$PG_URL"
start_runtime SINGLE single single --data-dir "$WORK/single"
start_runtime IDLE idle idle --data-dir "$WORK/idle"

PROFILE_ARGS=()
if [[ -n $PROFILE ]]; then
	PROFILE_ARGS=(--profile-dir "$PROFILE" --debug "$(IFS=,; echo "${DEBUG[*]}")")
fi

log "running the scenarios ($RUNS runs each; S4 at $S4_DOCS documents for $S4_DURATION)"
set +e
"$BENCH" run --replicas "$A,$B" --single "$SINGLE" --idle "$IDLE" --postgres-url "$PG_URL" \
	--jwt-key-file "$WORK/jwt.key" --runs "$RUNS" --out "$WORK/results.json" \
	--s3-conns "$S3_CONNS" --s4-docs "$S4_DOCS" --s4-duration "$S4_DURATION" "${PROFILE_ARGS[@]}" ${BENCH_ARGS:-}
SCENARIOS_RC=$?
set -e

log "running the Go micro-benchmarks (-count $COUNT)"
nice go test -run '^$' -benchmem -count "$COUNT" \
	-bench '^Benchmark(Apply|Transform|Compose|TransformCursor|Marshal|Unmarshal|Rope.*|Sequencer|Encoding)$' \
	./runtime/ot ./runtime/rope ./internal/bench | tee "$WORK/micro.txt"
"$BENCHSTAT" "$WORK/micro.txt" >"$WORK/benchstat.txt"

log "measuring the editor: typing into a 1 MiB document in Chromium"
EDITOR_RC=0
TANDEM_PERF_OUT="$WORK/editor.txt" go test -count=1 -run '^TestTypingLatencyInOneMebibyteDocument$' ./test/browser/ || EDITOR_RC=$?

# Storage (docs/benchmarks.md, "Storage under churn with retention"):
# SQLite and PostgreSQL churn with a one-minute retention (sizes in MB
# empty, before and after compaction) and Redis memory with 10,000 idle
# documents past their TTL. One run each, minutes long.
log "running the storage benchmarks (churn with retention; idle documents in Redis)"
nice go test -run '^$' -count 1 -benchtime 1x -timeout 30m \
	-bench '^BenchmarkStorage' ./internal/bench | tee "$WORK/storage.txt"

cat >"$WORK/setup.md" <<EOF
- Replicas A and B: \`tandem-runtime --redis-url … --postgres-url …\` sharing one redis-server (no persistence) and one PostgreSQL $("$POSTGRES" --version | awk '{print $3}') (default settings, fsync on), redis-server $(redis-server --version | awk '{print $3}' | sed 's/^v=//').
- Single: \`tandem-runtime --data-dir …\` (embedded SQLite). Idle: a second embedded runtime used only by S3, so its memory baseline is a fresh process.
- Every runtime: \`--auth jwt --ops-per-second 1000000 --max-conns-per-doc 100000\` (the per-connection rate limit would otherwise cap the closed loop), default flush interval and batch.
- The load tool runs on the same two cores as the runtimes, Redis and PostgreSQL.
- S4 is scaled down by default to $S4_DOCS documents × 5 editors × $S4_DURATION (the full 1,000 × 5 × 30 s is \`BENCH_S4_DOCS=1000 BENCH_S4_DURATION=30s make bench\`).
EOF
if [[ -n $PROFILE ]]; then
	echo '- Run 1 was profiled (`BENCH_PROFILE`: CPU profiles of the runtimes during S1, S2, S2-single and S4, a heap profile during S3); the medians absorb its small overhead.' >>"$WORK/setup.md"
fi

NOTES=()
[[ -f hack/bench-notes.md ]] && NOTES=(--notes hack/bench-notes.md)
"$BENCH" report --results "$WORK/results.json" --gobench "$WORK/micro.txt" --benchstat "$WORK/benchstat.txt" \
	--storage "$WORK/storage.txt" --setup "$WORK/setup.md" "${NOTES[@]}" --out "$OUT"
{
	echo
	echo "## Editor: typing into a 1 MiB document"
	echo
	echo "\`test/browser\` (\`TestTypingLatencyInOneMebibyteDocument\`): headless Chromium, the built editor page against an embedded runtime on the same machine; 120 key presses at the end of a 1 MiB document, one every 80 ms, each sent as a keyboard sends it (key down with its text, then key up). Input to paint is measured in the page: from the key event's timestamp to a message posted from the next \`requestAnimationFrame\` callback (handled when that frame's style, layout, paint and commit are done); the Event Timing API gives the browser's input to next paint (to the frame's presentation, 8 ms steps) for every key press of 16 ms or more. The same page with a few hundred bytes is measured before and after (60 key presses each), and a bare \`<textarea>\` in the same browser before and after everything; so is the time spent in the client per key press (taking the edit in, handling the server's frames): the test fails when the median time in the client a key press is 1 ms more with 1 MiB than with the small document. Target: under 16 ms."
	echo
	if [[ -s $WORK/editor.txt ]]; then sed 's/^/- /' "$WORK/editor.txt"; else echo "- not measured (the browser test failed, exit $EDITOR_RC; see the log)"; fi
} >>"$OUT"
# The operator at scale on kwok (hack/bench-operator.sh): N=100 unless
# BENCH_OPERATOR_N says otherwise ("100 500" for both).
log "running the operator at scale (N = ${BENCH_OPERATOR_N:-100})"
OPERATOR_RC=0
hack/bench-operator.sh "$WORK/operator.md" || OPERATOR_RC=$?
{
	echo
	if [[ $OPERATOR_RC == 0 ]]; then cat "$WORK/operator.md"; else echo "## Operator at scale"; echo; echo "- not measured (hack/bench-operator.sh failed, exit $OPERATOR_RC; see the log)"; fi
} >>"$OUT"
log "wrote $OUT"
if [[ -n $PROFILE ]]; then
	log "profiles in $PROFILE (go tool pprof -top FILE)"
fi
if [[ $SCENARIOS_RC != 0 ]]; then
	log "some scenarios failed verification; see $OUT"
	exit "$SCENARIOS_RC"
fi
