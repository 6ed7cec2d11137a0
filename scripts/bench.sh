#!/usr/bin/env bash
# `make bench`: runs the benchmark suite once (each benchmark takes its own
# samples and reports p50/p99 or MiB/s beside a floor measured in the same
# run), prints the table and writes bench/results/<time>.{txt,json,md}.
# Packages run one after another (-p 1) so they do not compete for CPU.
# TECHBOSS_BENCH_SUBSCRIBERS overrides the fan-out size (default 5000),
# TECHBOSS_BENCH_DENSITY the density benchmark's sandbox count (1000).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test || exit 1
export TECHBOSS_VERSITYGW_BIN="${TECHBOSS_VERSITYGW_BIN:-$PWD/.tools/bin/versitygw}"
export TECHBOSS_CLAUDE_BIN="${TECHBOSS_CLAUDE_BIN:-$PWD/.tools/claude/node_modules/.bin/claude}"
# PostgreSQL for the cross-replica benchmark (a throwaway server, as make test starts)
if [ -z "${TECHBOSS_TEST_POSTGRES_URL:-}" ]; then
  eval "$(scripts/pg.sh start)" || exit 1
  trap 'scripts/pg.sh stop "$TECHBOSS_PG_DIR" >/dev/null 2>&1' EXIT
fi
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw="bench/results/$stamp.txt"
: >"$raw"

# package and benchmark selection, one line each (see docs/performance.md)
suite=(
  "./internal/httpapi ^Benchmark(HTTPCreateFirstExec|HTTPCreateFirstExecWarm|HTTPExecTrue|HTTPCreateFirstExecRunsc|HTTPExecTrueRunsc|ExecStdoutStream|ExecSSEDecode|FileUpload|FileDownload|SSEFanout|CLILineToSSE|CLIDeltaToSSE|ChatFirstByte|PTYKeystrokeEcho)$"
  "./internal/snapshot ^Benchmark(SnapshotFirst|SnapshotNoChange10k|SnapshotChanged1pct|Restore)$"
  "./internal/llm/gateway ^Benchmark(GatewayFirstByte|OpenAIGatewayFirstByte)$"
  "./internal/agent ^Benchmark(RunWallVsBareCLI|CrossReplicaEvent|ApprovalRoundTrip)$"
  "./internal/sandbox/local/runsc ^Benchmark(RunscStartFirstExec|RunscExecTrue)$"
  "./internal/httpapi ^Benchmark(PreviewProxy)$"
  "./cmd/server ^Benchmark(IdleRSS)$"
  "./internal/httpapi ^Benchmark(SandboxMemory|Density)$ -density=${TECHBOSS_BENCH_DENSITY:-1000}"
)
status=0
start=$SECONDS
for entry in "${suite[@]}"; do
  read -r pkg pat args <<<"$entry"
  echo "== $pkg $pat $args" | tee -a "$raw"
  # shellcheck disable=SC2086 # args: the benchmark's own flags, split
  if ! go test -run '^$' -bench "$pat" -benchtime 1x -count 1 -timeout 30m "$pkg" ${args:+-args $args} 2>&1 | tee -a "$raw"; then
    echo "bench: $pkg failed" >&2
    status=1
  fi
done
echo "== suite took $((SECONDS - start)) s" | tee -a "$raw"
echo
go run ./cmd/benchreport -json "bench/results/$stamp.json" -md "bench/results/$stamp.md" <"$raw" || status=1
echo
echo "raw output: $raw; JSON: bench/results/$stamp.json; Markdown: bench/results/$stamp.md"
exit $status
