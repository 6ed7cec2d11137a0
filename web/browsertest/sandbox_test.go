package browsertest

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
)

// TestSandboxPages drives the sandbox views on the real local driver:
// create with a bad field (error next to it), create for real, upload a
// file, view it, download it, delete it, run a command with streamed
// output, check another user gets nothing, terminate with confirmation.
func TestSandboxPages(t *testing.T) { forViewports(t, testSandboxPages) }

func testSandboxPages(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	s.user(t, bobEmail, bobPass)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	// This stack runs no agent: the chat panel and the cost lookups get 503s.
	b.allow(`^http: GET .*/sandbox/[^/]+/runs -> 503$`)
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.waitJS("empty list", `!document.querySelector("main p.empty-list").hidden`)
	b.checkA11y("sandboxes")

	// A validation error lands next to its input.
	b.allow(`^http: POST .*/sandbox -> 422$`)
	b.openAdvanced()
	b.fillByLabel("Memory (MiB)", "99999999")
	b.clickButton("Create sandbox")
	b.waitJS("field error", `(document.querySelector('[data-for="memory_mb"]') || {}).textContent?.length > 0`)
	b.fillByLabel("Memory (MiB)", "512")
	b.fillByLabel("Name", "pages")
	b.clickButton("Create sandbox")
	b.waitJS("sandbox page", `location.hash.startsWith("#/sandbox/") && (document.querySelector("main .badge") || {}).textContent === "running"`)
	id := strings.TrimPrefix(eval[string](b, `location.hash`), "#/sandbox/")
	b.shot("sandbox-chat-empty")
	b.checkA11y("sandbox")

	// Upload a file, see it in the tree, view it.
	b.clickButton("Files")
	upload := filepath.Join(t.TempDir(), "notes.md")
	if err := os.WriteFile(upload, []byte("# notes\n<b>not bold</b>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.do("choose file", chromedp.SetUploadFiles(chromedp.Search(`//label[normalize-space(text())="Files"]//input`), []string{upload}))
	b.clickButton("Upload")
	b.waitJS("uploaded", `!!document.querySelector('li[data-path="notes.md"]')`)
	b.do("view notes.md", chromedp.Click(chromedp.CSS(`li[data-path="notes.md"] .file-row button.link`)))
	b.waitJS("file content", `(document.querySelector(".file-content") || {}).textContent === "# notes\n<b>not bold</b>\n"`)
	if n := b.count(".viewer b"); n != 0 {
		t.Errorf("file content was rendered as HTML")
	}
	b.shot("sandbox-files")
	// The download link fetches the raw bytes with the session cookie.
	got := eval[string](b, `fetch(document.querySelector('li[data-path="notes.md"] a[download]').href).then(r => r.text())`)
	if got != "# notes\n<b>not bold</b>\n" {
		t.Errorf("download got %q", got)
	}
	b.do("delete notes.md", chromedp.Click(chromedp.CSS(`li[data-path="notes.md"] button[aria-label="Delete notes.md"]`)))
	b.confirm()
	b.waitJS("deleted", `!document.querySelector('li[data-path="notes.md"]')`)

	// Exec streams stdout and stderr and reports the exit code.
	b.clickButton("Run command")
	b.fillByLabel("Command (run with sh -c in /workspace)", "echo out-line; echo err-line >&2; pwd; exit 3")
	b.clickButton("Run")
	b.waitJS("exit shown", `(document.querySelector('#panel-exec [role="status"]') || {}).textContent?.startsWith("Exited with code 3")`)
	out := b.text("#panel-exec pre.out")
	for _, want := range []string{"out-line", "err-line", "/workspace"} {
		if !strings.Contains(out, want) {
			t.Errorf("exec output %q lacks %q", out, want)
		}
	}
	if e := b.text("#panel-exec pre.out .stderr"); !strings.Contains(e, "err-line") {
		t.Errorf("stderr not marked: %q", e)
	}
	b.shot("sandbox-exec")

	// A tree made by a command: folders expand lazily, files open.
	b.fillByLabel("Command (run with sh -c in /workspace)", "mkdir -p src/lib && printf 'package lib\\n' > src/lib/a.go")
	b.clickButton("Run")
	b.waitJS("mkdir done", `(document.querySelector('#panel-exec [role="status"]') || {}).textContent?.startsWith("Exited with code 0")`)
	b.clickButton("Files")
	b.clickButton("Refresh")
	b.do("expand src", chromedp.Click(chromedp.CSS(`li[data-path="src"] > .file-row button[aria-expanded]`)))
	b.do("expand src/lib", chromedp.Click(chromedp.CSS(`li[data-path="src/lib"] > .file-row button[aria-expanded]`)))
	b.do("open a.go", chromedp.Click(chromedp.CSS(`li[data-path="src/lib/a.go"] .file-row button.link`)))
	b.waitJS("a.go content", `document.querySelector(".file-content")?.textContent === "package lib\n"`)
	if kw := b.text(".file-content .tok-kw"); kw != "package" {
		t.Errorf("Go keyword not highlighted: got %q", kw)
	}
	if got := eval[string](b, `document.querySelector('li[data-path="src"] > .file-row button').getAttribute("aria-expanded")`); got != "true" {
		t.Errorf("got aria-expanded %q on an open folder, want true", got)
	}

	// Another user: not in the list, and the page says not found.
	bob := newBrowser(t, s.url)
	bob.allow(`^http: GET .*/auth/me -> 401$`)
	bob.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	bob.allow(`^http: GET .*/sandbox/` + id + `(/.*)? -> (404|503)$`)
	bob.open("/")
	bob.login(bobEmail, bobPass)
	bob.waitJS("empty list", `!document.querySelector("main p.empty-list").hidden`)
	if n := bob.count("tr[data-sandbox]"); n != 0 {
		t.Errorf("bob sees %d sandboxes", n)
	}
	bob.open("/static/modal-sandbox-ui.html#/sandbox/" + id + "/files")
	bob.waitJS("not found", `document.querySelector("main h1").textContent === "Sandbox not found"`)
	bob.checkProblems()

	// Terminate after confirming; the list then hides it unless asked.
	b.clickButton("Terminate")
	b.confirm()
	b.waitJS("terminated", `["terminated", "terminating"].includes(document.querySelector("main .badge").textContent)`)
	b.clickButton("Sandboxes")
	b.waitJS("list", `!!document.querySelector("main table")`)
	b.waitJS("hidden when terminated", `document.querySelectorAll("tr[data-sandbox]").length === 0`)
	b.do("show terminated", chromedp.Click(chromedp.Search(`//label[contains(., "Show terminated")]/input`)))
	b.waitJS("shown", `document.querySelectorAll("tr[data-sandbox]").length === 1`)
	b.checkProblems()
}

// TestSandboxBuildProgress creates a sandbox whose Dockerfile step waits
// for a name the test's DNS server (the sandboxes' upstream) resolves only
// once the test opens the gate (a build reaches no host service): while it
// builds, the form is disabled and shows the build log as it grows; after
// release the page opens the running sandbox.
func TestSandboxBuildProgress(t *testing.T) { forViewports(t, testSandboxBuildProgress) }

func testSandboxBuildProgress(t *testing.T, vp viewport) {
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open) // a hung build ends
	dns := sandboxtest.FakeDNS(t, func(name string) (netip.Addr, bool) {
		select {
		case <-release:
			return netip.MustParseAddr("192.0.2.1"), name == "release.gate.test"
		default:
			return netip.Addr{}, false
		}
	})
	s := buildStack(t, stackOptions{sandboxes: true, dns: dns})
	s.user(t, aliceEmail, alicePass)

	b := newBrowser(t, s.url)
	b.allowSandboxStack()
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.openAdvanced()
	b.fillByLabel("Dockerfile commands", "RUN echo step-$((0+1))-done; until getent hosts release.gate.test >/dev/null; do sleep 0.05; done; echo step-$((1+1))-done")
	b.clickButton("Create sandbox")
	b.waitJS("build log shows the first step", `(document.querySelector("pre.build-log:not([hidden])") || {}).textContent?.includes("step-1-done")`)
	if txt := b.text("pre.build-log"); strings.Contains(txt, "step-2-done") {
		t.Fatalf("build went past the gate: %q", txt)
	}
	if enabled := eval[bool](b, `![...document.querySelectorAll("form button[type=submit]")].find(x => x.textContent === "Create sandbox").disabled`); enabled {
		t.Errorf("create button enabled while the sandbox builds")
	}
	if p := b.text(`form [role="status"]`); !strings.HasPrefix(p, "Building image") {
		t.Errorf("got progress %q", p)
	}
	b.shot("sandbox-building")
	open()
	b.waitJS("sandbox page", `location.hash.startsWith("#/sandbox/") && (document.querySelector("main .badge") || {}).textContent === "running"`)
	b.checkProblems()
}
