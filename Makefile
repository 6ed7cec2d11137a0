# TechBoss AI Go. The two set-up commands are `make run` and `make test`.
GO        ?= go
BIN       := bin
TOOLS     := $(CURDIR)/.tools
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Only linker flags: the packages then compile with the same cache keys as
# in `make test` (no -trimpath), so `make run` after it links in seconds.
LDFLAGS   := -s -w -X main.buildVersion=$(VERSION)
export CGO_ENABLED ?= 0

.PHONY: run build assets test test-integration test-modal migrate lint fmt bench clean

## run: build and start the server on the embedded defaults (SQLite, local blobs, local sandboxes)
run: build
	@scripts/deps.sh run
	TECHBOSS_CLAUDE_BIN=$${TECHBOSS_CLAUDE_BIN:-$(TOOLS)/claude/node_modules/.bin/claude} ./$(BIN)/server

build: assets
	@scripts/gocheck.sh
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## assets: the UI's bundled browser code (xterm.js, pinned by web/package-lock.json) into web/static/vendor
assets:
	@scripts/deps.sh assets

## test: install what the tests need when missing, start PostgreSQL, run every test
test:
	@scripts/gocheck.sh
	scripts/test.sh

## test-integration: the same suite (every test here is an integration test on real components)
test-integration: test

## test-modal: live tests against real Modal (needs MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)
test-modal:
	@if [ -z "$$MODAL_TOKEN_ID" ] || [ -z "$$MODAL_TOKEN_SECRET" ]; then \
		echo "test-modal: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (and optionally ANTHROPIC_API_KEY for a Claude run) to run the live Modal tests; nothing was run."; \
	else \
		TECHBOSS_MODAL_LIVE=1 $(GO) test -count=1 -run Live -v ./internal/sandbox/modal/...; \
	fi

## migrate: run pending database migrations (DATABASE_URL or ./data/techboss.db)
migrate:
	$(GO) run ./cmd/techboss migrate

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

fmt:
	gofmt -s -w $$(git ls-files '*.go')

## bench: the benchmark suite with floors measured in the same run
bench:
	scripts/bench.sh

clean:
	rm -rf $(BIN) bench/results test-artifacts
