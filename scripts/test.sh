#!/usr/bin/env bash
# `make test`: installs what the tests need when missing, starts a throwaway
# PostgreSQL, and runs every test with every dependency required (no skips
# for missing services).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
eval "$(scripts/pg.sh start)"
trap 'scripts/pg.sh stop "$TECHBOSS_PG_DIR"' EXIT
export TECHBOSS_REQUIRE_ALL=1
export TECHBOSS_VERSITYGW_BIN="$PWD/.tools/bin/versitygw"
export TECHBOSS_CLAUDE_BIN="$PWD/.tools/claude/node_modules/.bin/claude"
export TECHBOSS_CLAUDE_MUSL_BIN="$PWD/.tools/claude-musl/node_modules/@anthropic-ai/claude-code-linux-x64-musl/claude"
export TECHBOSS_CHROMIUM_BIN=${TECHBOSS_CHROMIUM_BIN:-$(command -v chromium)}
export TECHBOSS_AXE_JS="$PWD/.tools/axe/node_modules/axe-core/axe.min.js"
export TECHBOSS_TEST_ARTIFACTS="$PWD/test-artifacts"
mkdir -p "$TECHBOSS_TEST_ARTIFACTS"
# -p 2: two cores; packages that start sandboxes and real CLIs are heavy.
go test -count=1 -p 2 -timeout 20m "${@:-./...}"
