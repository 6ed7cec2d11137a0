#!/usr/bin/env bash
# `make bench`: runs every benchmark once (each benchmark does its own
# repetitions and reports p50/p99 or MiB/s beside a floor measured in the
# same run), prints the table and writes bench/results/<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
export TECHBOSS_VERSITYGW_BIN="$PWD/.tools/bin/versitygw"
export TECHBOSS_CLAUDE_BIN="$PWD/.tools/claude/node_modules/.bin/claude"
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw="bench/results/$stamp.txt"
go test -run '^$' -bench . -benchtime 1x -timeout 15m -p 1 ./... | tee "$raw"
echo
go run ./cmd/benchreport -json "bench/results/$stamp.json" < "$raw"
echo
echo "raw output: $raw; JSON: bench/results/$stamp.json"
