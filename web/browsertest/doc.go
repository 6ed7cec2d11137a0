// Package browsertest drives the embedded web UI in a real headless
// Chromium against the real server (real SQLite, real sandbox driver, the
// real Claude Code CLI talking to the scripted model server). It has no
// non-test code; the tests skip with a reason when Chromium or the CLI is
// missing, and fail instead under TECHBOSS_REQUIRE_ALL=1.
package browsertest
