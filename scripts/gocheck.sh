#!/usr/bin/env bash
# Says which Go the build needs when the installed one is older (go.mod's
# go line), instead of a compiler error about a language feature.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
if ! command -v "$GO" >/dev/null 2>&1; then
  echo "TechBoss needs Go $need or newer; no '$GO' on PATH (install it from your distribution or the Go website)." >&2
  exit 1
fi
# GOTOOLCHAIN=local: report the installed toolchain, not one go would fetch.
have=$(GOTOOLCHAIN=local "$GO" env GOVERSION 2>/dev/null || true)
have=${have#go}
older() { # older A B: A < B as versions
  [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]
}
if [ -z "$have" ] || older "$have" "$need"; then
  case "${GOTOOLCHAIN:-auto}" in
  local | *+local)
    echo "TechBoss needs Go $need or newer (go.mod); this machine has Go ${have:-unknown} and GOTOOLCHAIN=local forbids fetching $need. Install Go $need or set GOTOOLCHAIN=auto." >&2
    exit 1 ;;
  *)
    echo "note: Go ${have:-unknown} is older than the Go $need go.mod asks for; go fetches toolchain $need through the module proxy." >&2 ;;
  esac
fi
