#!/usr/bin/env bash
# Installs what the server and the tests need, when missing. Idempotent.
#   scripts/deps.sh run    -> what `make run` needs (bubblewrap, the Claude Code CLI)
#   scripts/deps.sh test   -> plus postgresql, chromium, versitygw, busybox-static, gVisor's runsc,
#                             python3-httpx and python3-pytest, the TypeScript SDK's dev dependencies
#   scripts/deps.sh assets -> only the UI's bundled browser code (web/static/vendor; run and test do it too)
# With TECHBOSS_LOCAL_RUNTIME=runsc, `run` builds gVisor's runsc too.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}
TOOLS=${TECHBOSS_TOOLS_DIR:-$PWD/.tools}
CLAUDE_VERSION=2.1.332
VERSITYGW_VERSION=v1.8.0
# gVisor's runsc, built from source (its go branch; Debian's 2022 build
# lacks the systrap platform and fails statx and networking here).
RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237
mkdir -p "$TOOLS"

# The UI's third-party browser code (xterm.js), pinned by web/package-lock.json,
# installed with `npm ci` and copied into web/static/vendor/ (git-ignored), which
# go:embed picks up. Without npm the server still builds; its Terminal tab then
# says the assets are not built.
web_assets() {
  local web=web vendor=web/static/vendor
  if ! command -v npm >/dev/null 2>&1; then
    echo "deps: npm not found; the UI's terminal assets (web/static/vendor) are not built" >&2
    return 0
  fi
  if ! cmp -s "$web/package-lock.json" "$web/node_modules/.techboss-lock" 2>/dev/null; then
    echo "deps: installing the UI's browser packages (npm ci in web/)" >&2
    (cd "$web" && npm ci --silent --no-audit --no-fund --ignore-scripts >&2)
    cp "$web/package-lock.json" "$web/node_modules/.techboss-lock"
  fi
  mkdir -p "$vendor"
  local m=$web/node_modules/@xterm
  # Source maps stay out of the binary (and their comment out of the files).
  sed '/^\/\/# sourceMappingURL=/d' "$m/xterm/lib/xterm.mjs" > "$vendor/xterm.mjs.tmp"
  sed '/^\/\/# sourceMappingURL=/d' "$m/addon-fit/lib/addon-fit.mjs" > "$vendor/addon-fit.mjs.tmp"
  cp "$m/xterm/css/xterm.css" "$vendor/xterm.css.tmp"
  cp "$m/xterm/LICENSE" "$vendor/LICENSE-xterm.txt.tmp"
  for f in xterm.mjs addon-fit.mjs xterm.css LICENSE-xterm.txt; do
    if cmp -s "$vendor/$f.tmp" "$vendor/$f"; then rm "$vendor/$f.tmp"; else mv "$vendor/$f.tmp" "$vendor/$f"; fi
  done
}
web_assets
[ "$mode" = assets ] && exit 0

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have bwrap || need_apt+=(bubblewrap)
have nsenter || need_apt+=(util-linux)
# pasta (passt): user-mode networking for sandboxes with network "full" or an allow-list.
have pasta || need_apt+=(passt)
# mkfs.ext4: each local sandbox's disk is a loop-mounted ext4 image (disk_mb).
have mkfs.ext4 || need_apt+=(e2fsprogs)
# git: repositories are cloned, committed and pushed by git inside "host"
# sandboxes (the host's /usr); the tests serve repositories with git http-backend.
have git || need_apt+=(git)
if [ "$mode" = test ]; then
  [ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
  have chromium || need_apt+=(chromium)
  # musl's loader, for the test image that runs the CLI's -musl build.
  [ -e /lib/ld-musl-x86_64.so.1 ] || need_apt+=(musl)
  # The test OCI image is built from Debian's statically linked busybox.
  dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
  # curl and jq: cmd/server's TestDocsCurl runs the docs' examples with them.
  have curl || need_apt+=(curl)
  have jq || need_apt+=(jq)
  # The Python SDK's tests (cmd/server's TestSDKs): Debian's python3 with
  # httpx and pytest (no other package index is needed).
  [ -x /usr/bin/python3 ] || need_apt+=(python3)
  /usr/bin/python3 -c 'import httpx' >/dev/null 2>&1 || need_apt+=(python3-httpx)
  /usr/bin/python3 -c 'import pytest' >/dev/null 2>&1 || need_apt+=(python3-pytest)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if have apt-get && [ "$(id -u)" = 0 ]; then
    echo "deps: installing ${need_apt[*]} (apt)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "deps: missing ${need_apt[*]}; install them with your package manager" >&2
    exit 1
  fi
fi

# npm_version PREFIX PACKAGE: the version of an installed package ("" if none).
npm_version() {
  sed -n 's/^  "version": "\(.*\)",$/\1/p' "$1/node_modules/$2/package.json" 2>/dev/null | head -n1
}

# The Claude Code CLI, pinned, in a project-local prefix (reinstalled when
# the pin moves).
if [ ! -x "$TOOLS/claude/node_modules/.bin/claude" ] || [ "$(npm_version "$TOOLS/claude" @anthropic-ai/claude-code)" != "$CLAUDE_VERSION" ]; then
  if have npm; then
    echo "deps: installing @anthropic-ai/claude-code@$CLAUDE_VERSION into $TOOLS/claude" >&2
    mkdir -p "$TOOLS/claude"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/claude" "@anthropic-ai/claude-code@$CLAUDE_VERSION" >&2
  else
    echo "deps: npm not found; the Claude Code CLI will not be available to sandboxes" >&2
  fi
fi

# Its -musl build, mounted into sandboxes whose image is musl-based (Alpine).
# npm installs only the host's libc variant by default, hence --force.
if { [ ! -x "$TOOLS/claude-musl/node_modules/@anthropic-ai/claude-code-linux-x64-musl/claude" ] || [ "$(npm_version "$TOOLS/claude-musl" @anthropic-ai/claude-code-linux-x64-musl)" != "$CLAUDE_VERSION" ]; } && [ "$(uname -m)" = x86_64 ] && have npm; then
  echo "deps: installing @anthropic-ai/claude-code-linux-x64-musl@$CLAUDE_VERSION into $TOOLS/claude-musl" >&2
  mkdir -p "$TOOLS/claude-musl"
  npm install --silent --force --no-audit --no-fund --prefix "$TOOLS/claude-musl" "@anthropic-ai/claude-code-linux-x64-musl@$CLAUDE_VERSION" >&2 \
    || echo "deps: the -musl Claude Code CLI could not be installed; musl images need claude on their PATH" >&2
fi

# gVisor's runsc, pinned, for TECHBOSS_LOCAL_RUNTIME=runsc and the tests
# of both runtimes. The version file says which one the binary is.
if [ "$mode" = test ] || [ "${TECHBOSS_LOCAL_RUNTIME:-bwrap}" = runsc ]; then
  if [ ! -x "$TOOLS/bin/runsc" ] || [ "$(cat "$TOOLS/bin/runsc.version" 2>/dev/null)" != "$RUNSC_VERSION" ]; then
    echo "deps: building gVisor's runsc $RUNSC_VERSION (about 3 minutes)" >&2
    GOBIN="$TOOLS/bin" CGO_ENABLED=0 go install "gvisor.dev/gvisor/runsc@$RUNSC_VERSION"
    echo "$RUNSC_VERSION" > "$TOOLS/bin/runsc.version"
  fi
fi

# axe-core, for the browser tests' accessibility checks (pinned).
AXE_VERSION=4.14.1
if [ "$mode" = test ] && [ "$(npm_version "$TOOLS/axe" axe-core)" != "$AXE_VERSION" ] && have npm; then
  echo "deps: installing axe-core@$AXE_VERSION into $TOOLS/axe" >&2
  mkdir -p "$TOOLS/axe"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/axe" "axe-core@$AXE_VERSION" >&2
fi

# The TypeScript SDK's pinned dev dependencies (tsc, openapi-typescript),
# for its build and tests in cmd/server's TestSDKs.
if [ "$mode" = test ] && have npm; then
  sdk=sdk/typescript
  if ! cmp -s "$sdk/package-lock.json" "$sdk/node_modules/.techboss-lock" 2>/dev/null; then
    echo "deps: installing the TypeScript SDK's dev dependencies (npm ci in $sdk)" >&2
    (cd "$sdk" && npm ci --silent --no-audit --no-fund --ignore-scripts >&2)
    cp "$sdk/package-lock.json" "$sdk/node_modules/.techboss-lock"
  fi
fi

if [ "$mode" = test ]; then
  if [ ! -x "$TOOLS/bin/versitygw" ]; then
    echo "deps: building versitygw $VERSITYGW_VERSION (about 2 minutes)" >&2
    GOBIN="$TOOLS/bin" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  fi
fi
