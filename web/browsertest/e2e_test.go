package browsertest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/techbossai/techboss/internal/modeltest"
)

// The agent's file content and the hostile answer of the second run.
const (
	agentFileContent = "hello from the agent"
	hostileAnswer    = "All done. Here is **bold** text and `code`.\n\n" +
		"<img src=x onerror=\"window.pwned=1\"> <script>window.pwned=2</script>\n\n- one\n- two"
)

// TestAgentWorkflow is the main job through the browser: log in, create a
// sandbox, prompt the agent (real Claude Code CLI in the local sandbox, model
// answers scripted), watch the stream arrive in steps, reload mid-run and
// resume without duplicates, see the agent's file in the file browser, cancel,
// prompt again (a retried API error and a hostile HTML answer rendered inert),
// snapshot, delete, restore, exec, check another user sees nothing, terminate.
func TestAgentWorkflow(t *testing.T) { forViewports(t, testAgentWorkflow) }

func testAgentWorkflow(t *testing.T, vp viewport) {
	chromiumPath(t)
	srv := newAgentStack(t,
		// Run 1: one tool call, then a turn that never finishes until cancelled.
		modeltest.ToolUse("I'll create the file now.", "Bash", map[string]string{
			"command":     fmt.Sprintf("printf '%s\\n' > hello.txt && cat hello.txt", agentFileContent),
			"description": "Create hello.txt",
		}),
		modeltest.Hang("Still thinking about"),
		// Run 2: two overloaded answers the CLI retries, then hostile HTML.
		modeltest.HTTPError(529).Times(2),
		modeltest.Text(hostileAnswer),
		// Run 3: a request the API refuses for good.
		modeltest.HTTPError(400),
	)
	srv.user(t, aliceEmail, alicePass)
	srv.user(t, bobEmail, bobPass)

	b := newBrowser(t, srv.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	if !srv.snapshots {
		b.allow(`^http: GET .*/sandbox/[^/]+/snapshots -> (404|503)$`)
	}
	b.open("/")
	b.login(aliceEmail, alicePass)

	// Create a sandbox through the form; the page moves to it once it runs.
	b.createSandbox("e2e box")
	id := strings.TrimPrefix(eval[string](b, `location.hash`), "#/sandbox/")
	if id == "" || strings.Contains(id, "/") {
		t.Fatalf("got sandbox hash %q", id)
	}

	// Run 1. The first turn (text + Bash call + its output) must show while
	// the run is still going: the second model answer hangs until cancelled.
	b.fillByLabel("Prompt", "Create hello.txt please")
	b.clickButton("Send")
	b.waitJS("first text", `[...document.querySelectorAll(".run .text")].some(e => e.textContent.includes("I'll create the file now."))`)
	b.waitJS("tool card with output", `(() => {
		const c = document.querySelector('.run details.tool[data-tool="Bash"]');
		return c && c.querySelector("summary").textContent.includes("printf") &&
			(c.querySelector(".tool-output") || {}).textContent?.includes(`+"`"+agentFileContent+"`"+`);
	})()`)
	assertRunning(t, b)
	// The second answer's first tokens show while the model still holds
	// the rest, with the working indicator beside the run's state.
	b.waitJS("streamed text of the unfinished answer", `[...document.querySelectorAll(".run .text.streaming")].some(e => e.textContent.includes("Still thinki"))`)
	b.waitJS("working indicator", `(document.querySelector(".run .working") || {}).textContent?.includes("Working")`)
	b.shot("agent-mid-run")
	b.axe("live run")

	// Reload mid-run: the transcript is rebuilt from the event log and
	// follows the live run, with each event exactly once.
	b.do("reload", chromedp.Reload())
	b.waitJS("transcript after reload", `document.querySelectorAll('.run details.tool[data-tool="Bash"]').length > 0 && !!document.querySelector(".run .tool-output")`)
	b.waitJS("live again after reload", `!document.querySelector("form.composer button.danger").hidden`)
	if n := b.count(".run"); n != 1 {
		t.Errorf("got %d run blocks after reload, want 1", n)
	}
	if n := b.count(`.run details.tool`); n != 1 {
		t.Errorf("got %d tool cards after reload, want 1 (duplicates?)", n)
	}
	if n := eval[int](b, `[...document.querySelectorAll(".run .text")].filter(e => e.textContent.includes("I'll create the file now.")).length`); n != 1 {
		t.Errorf("got %d copies of the first text after reload, want 1", n)
	}
	assertRunning(t, b)

	// Drop every connection mid-run: the page reconnects on its own with
	// Last-Event-ID and shows each event still exactly once.
	b.allow(`^request: (GET .*/runs/[^/]+/events|POST .*/sandbox/[^/]+/claude\?format=events): net::ERR_`)
	before := len(b.resumeIDs())
	conns := eval[string](b, `document.querySelector(".run").dataset.connections`)
	srv.dropConnections()
	b.waitJS("reconnected", fmt.Sprintf(`Number(document.querySelector(".run").dataset.connections) > %s`, conns))
	b.waitJS("streaming again", `document.querySelector("form.composer [role=status]").textContent === "Streaming…"`)
	b.waitJS("connection line cleared", `document.getElementById("conn").hidden`)
	resumed := false
	for _, id := range b.resumeIDs()[before:] {
		if n, err := strconv.Atoi(id); err == nil && n > 0 {
			resumed = true
		}
	}
	if !resumed {
		t.Errorf("no reconnect sent Last-Event-ID > 0; got %q", b.resumeIDs()[before:])
	}
	if n := b.count(`.run details.tool`); n != 1 {
		t.Errorf("got %d tool cards after reconnect, want 1", n)
	}
	if n := b.count(`.run .text:not(.streaming)`); n != 1 {
		t.Errorf("got %d text blocks after reconnect, want 1", n)
	}
	if n := b.count(`.run .text.streaming`); n != 1 {
		t.Errorf("got %d streaming text blocks after reconnect, want 1", n)
	}
	assertRunning(t, b)

	// The file the agent wrote is in the file browser.
	b.clickButton("Files")
	b.waitJS("hello.txt listed", `!!document.querySelector('li[data-path="hello.txt"]')`)
	b.do("open hello.txt", chromedp.Click(chromedp.CSS(`li[data-path="hello.txt"] .file-row button.link`)))
	b.waitJS("file content", `(document.querySelector(".file-content") || {}).textContent?.includes(`+"`"+agentFileContent+"`"+`)`)

	// Cancel the hanging run.
	b.clickButton("Agent")
	b.clickButton("Cancel run")
	b.waitJS("run cancelled", `(() => { const s = document.querySelector(".run .badge"); return s && s.textContent !== "running"; })()`)
	b.waitJS("composer enabled", `!document.querySelector("form.composer textarea").disabled`)

	// Run 2: a retry notice, then the hostile answer rendered as text.
	eval[bool](b, `(window.pwned = 0, true)`)
	b.fillByLabel("Prompt", "Summarise")
	b.do("send with Ctrl+Enter", chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	b.waitJS("second run done", `document.querySelectorAll(".run").length === 2 && ["succeeded", "completed"].includes(document.querySelectorAll(".run")[1].querySelector(".badge").textContent)`)
	second := `document.querySelectorAll(".run")[1]`
	if txt := eval[string](b, second+`.textContent`); !strings.Contains(txt, `<img src=x onerror="window.pwned=1">`) || !strings.Contains(txt, "<script>window.pwned=2</script>") {
		t.Errorf("hostile HTML is not shown as text; run text: %q", txt)
	}
	if n := eval[int](b, second+`.querySelectorAll("img, script, iframe, svg").length`); n != 0 {
		t.Errorf("the answer produced %d active elements", n)
	}
	if v := eval[int](b, `window.pwned`); v != 0 {
		t.Errorf("agent output ran script: pwned = %d", v)
	}
	if n := eval[int](b, second+`.querySelectorAll(".text strong, .text li").length`); n < 3 {
		t.Errorf("Markdown not rendered (strong + 2 li), got %d elements", n)
	}
	// Two retries of one call are one line, updated in place.
	if n := eval[int](b, second+`.querySelectorAll(".notice.retry").length`); n != 1 {
		t.Errorf("%d retry lines for two retries of one call, want 1", n)
	} else if txt := eval[string](b, second+`.querySelector(".notice.retry").textContent`); !strings.Contains(txt, "attempt 2") {
		t.Errorf("the retry line does not show the last attempt: %q", txt)
	}
	if s := eval[string](b, second+`.querySelector(".stats").textContent`); !strings.Contains(s, "tok") || !strings.Contains(s, "$") {
		t.Errorf("run stats missing tokens or cost: %q", s)
	}
	b.shotBoth("agent-second-run")
	b.checkA11y("sandbox with runs")
	// Run 3: the API error is shown in the run, which ends failed.
	b.fillByLabel("Prompt", "Break please")
	b.clickButton("Send")
	b.waitJS("third run ended", `document.querySelectorAll(".run").length === 3 && document.querySelectorAll(".run")[2].querySelector(".badge").textContent !== "running"`)
	third := `document.querySelectorAll(".run")[2]`
	if st := eval[string](b, third+`.querySelector(".badge").textContent`); st == "succeeded" {
		t.Errorf("a refused request ended %q", st)
	}
	if txt := eval[string](b, third+`.querySelector(".notice.error")?.textContent || ""`); !strings.Contains(txt, "invalid_request_error") && !strings.Contains(txt, "400") {
		t.Errorf("API error not shown in the run; notices: %q", txt)
	}
	b.waitJS("third run done", `!document.querySelector("form.composer textarea").disabled`)
	if n := b.count(".run:nth-child(3) .notice.error"); n != 1 {
		t.Errorf("got %d error notices for one failure, want 1: %q", n, eval[[]string](b, `[...document.querySelectorAll(".run:nth-child(3) .notice.error")].map(e => e.textContent)`))
	}

	// A failed run offers Retry, which sends the same prompt again (the
	// script has no more answers: it fails again, as a fourth run).
	if n := b.count(".run:nth-child(3) button.retry"); n != 1 {
		t.Errorf("the failed run has %d Retry buttons, want 1", n)
	} else {
		b.do("retry", chromedp.Click(chromedp.CSS(".run:nth-child(3) button.retry")))
		b.waitJS("retried run", `document.querySelectorAll(".run").length === 4 && document.querySelectorAll(".run")[3].querySelector(".prompt").textContent === "Break please"`)
		b.waitJS("retried run ended", `document.querySelectorAll(".run")[3].querySelector(".badge").textContent !== "running" && !document.querySelector("form.composer textarea").disabled`)
	}
	b.shot("agent-third-run")
	// The sandbox's cost so far is the sum of its runs' metered calls.
	b.do("reopen sandbox", chromedp.Reload())
	b.waitJS("header cost", `/\$0\.\d+ so far/.test(document.querySelector("main")?.textContent || "")`)
	if n := b.count(".history li"); n != 4 {
		t.Errorf("got %d runs in history, want 4 (three, and the retried one)", n)
	}

	// Snapshot, delete the file, restore, and the file is back.
	if srv.snapshots {
		snapshotRoundTrip(t, b, id)
	} else {
		t.Log("snapshots are not wired into this stack yet; skipping the snapshot steps")
	}

	// Exec with streamed output.
	b.clickButton("Run command")
	b.fillByLabel("Command (run with sh -c in /workspace)", "cat hello.txt; echo oops >&2; exit 3")
	b.clickButton("Run")
	b.waitJS("exec finished", `(document.querySelector('#panel-exec [role="status"]') || {}).textContent?.startsWith("Exited with code 3")`)
	if out := b.text("#panel-exec pre.out"); !strings.Contains(out, agentFileContent) || !strings.Contains(out, "oops") {
		t.Errorf("exec output %q lacks stdout or stderr", out)
	}
	if n := b.count("#panel-exec pre.out .stderr"); n < 1 {
		t.Errorf("stderr not marked")
	}

	// Another user sees neither the sandbox in the list nor its page.
	bob := newBrowser(t, srv.url)
	bob.allow(`^http: GET .*/auth/me -> 401$`)
	bob.allow(`^http: GET .*/sandbox/` + id + `(/runs|/snapshots)? -> 404$`)
	bob.open("/")
	bob.login(bobEmail, bobPass)
	bob.waitJS("empty list", `document.querySelector("main p.empty-list")?.hidden === false && document.querySelectorAll("tbody tr[data-sandbox]").length === 0`)
	bob.open("/static/modal-sandbox-ui.html#/sandbox/" + id)
	bob.waitJS("not found", `document.querySelector("main h1").textContent === "Sandbox not found"`)
	if txt := bob.text("main"); strings.Contains(txt, "hello.txt") || strings.Contains(txt, "I'll create") {
		t.Errorf("another user sees the sandbox's content")
	}
	bob.checkProblems()

	// Terminate with confirmation.
	b.clickButton("Terminate")
	b.confirm()
	b.waitJS("terminated", `["terminated", "terminating"].includes(document.querySelector("main .badge").textContent)`)
	// A sandbox that is not running takes no prompt, and says why.
	b.clickButton("Agent")
	b.waitJS("no prompt for a stopped sandbox", `(() => { const f = document.querySelector("form.composer"); return f.querySelector("textarea").disabled && f.querySelector("button[type=submit]").disabled && /no new runs/.test(f.textContent); })()`)

	// The usage page shows the metered calls by model and day, with a chart.
	b.clickButton("Usage")
	b.waitJS("usage by model", `[...document.querySelectorAll("#u-model-h + table tbody tr")].some(r => r.cells.length === 6 && r.cells[0].textContent.startsWith("claude") && /\$0\.\d+/.test(r.cells[5].textContent))`)
	if n := b.count("svg.chart rect.bar"); n < 1 {
		t.Errorf("usage chart has no bars")
	}
	b.shot("usage")
	b.checkA11y("usage")
	b.checkProblems()
}

// assertRunning checks that the latest run is live: still marked running and cancellable.
func assertRunning(t *testing.T, b *browser) {
	t.Helper()
	if s := eval[string](b, `[...document.querySelectorAll(".run .badge")].pop().textContent`); s != "running" {
		t.Errorf("got run state %q, want running", s)
	}
	if hidden := eval[bool](b, `document.querySelector("form.composer button.danger").hidden`); hidden {
		t.Errorf("cancel button hidden while the run is live")
	}
	if enabled := eval[bool](b, `!document.querySelector("form.composer button[type=submit]").disabled`); enabled {
		t.Errorf("send button enabled while a run is live")
	}
}

// snapshotRoundTrip takes snapshot A, deletes hello.txt, takes snapshot B,
// compares A to B (hello.txt removed), restores A after confirming, and
// finds the file again.
func snapshotRoundTrip(t *testing.T, b *browser, id string) {
	t.Helper()
	// Count first: runs may have taken snapshots of their own.
	b.clickButton("Snapshots")
	b.waitJS("timeline loaded", `!!document.querySelector(".timeline li")`)
	n0 := b.count(".timeline li[data-snapshot]")
	// Each of the three runs left a version of the workspace.
	if runs := eval[int](b, `[...document.querySelectorAll(".timeline li[data-snapshot] .badge")].filter(e => e.textContent === "run").length`); runs != 4 {
		t.Errorf("got %d snapshots taken after runs, want 4", runs)
	}
	b.clickButton("Create snapshot")
	b.waitJS("snapshot A listed", fmt.Sprintf(`document.querySelectorAll(".timeline li[data-snapshot]").length === %d`, n0+1))
	snapA := eval[string](b, `document.querySelector(".timeline li[data-snapshot]").dataset.snapshot`)
	itemA := fmt.Sprintf(`.timeline li[data-snapshot=%q]`, snapA)

	b.clickButton("Files")
	b.waitJS("hello.txt listed", `!!document.querySelector('li[data-path="hello.txt"]')`)
	b.do("delete hello.txt", chromedp.Click(chromedp.CSS(`li[data-path="hello.txt"] button[aria-label="Delete hello.txt"]`)))
	b.confirm()
	b.waitJS("hello.txt gone", `!document.querySelector('li[data-path="hello.txt"]')`)

	b.clickButton("Snapshots")
	b.clickButton("Create snapshot")
	b.waitJS("snapshot B listed", fmt.Sprintf(`document.querySelectorAll(".timeline li[data-snapshot]").length === %d`, n0+2))
	b.clickButton("Compare")
	b.waitJS("diff shown", `document.querySelector(".diff li.removed summary")?.textContent === "hello.txt"`)

	// Restore version A.
	b.do("restore A", chromedp.Click(chromedp.CSS(itemA+` button.danger`)))
	b.confirm()
	b.waitJS("restored", `[...document.querySelectorAll('#panel-snapshots [role="status"]')].some(e => e.textContent.startsWith("Restored"))`)
	b.shot("snapshots-restored")
	b.clickButton("Files")
	b.waitJS("hello.txt back", `!!document.querySelector('li[data-path="hello.txt"]')`)

	// A new sandbox started from version A has the file too.
	b.clickButton("Snapshots")
	b.do("new from A", chromedp.Click(chromedp.CSS(itemA+` a[href^="#/sandboxes/from/"]`)))
	b.waitJS("form prefilled", `document.querySelector('[data-for="from_snapshot"]') && [...document.querySelectorAll("input")].some(i => i.value.startsWith("snap_"))`)
	b.fillByLabel("Name", "from version A")
	b.clickButton("Create sandbox")
	b.waitJS("second sandbox page", fmt.Sprintf(`location.hash.startsWith("#/sandbox/") && !location.hash.includes(%q) && (document.querySelector("main .badge") || {}).textContent === "running"`, id))
	b.clickButton("Files")
	b.waitJS("hello.txt in the new sandbox", `!!document.querySelector('li[data-path="hello.txt"]')`)
	b.open("/static/modal-sandbox-ui.html#/sandbox/" + id)
	b.waitJS("back on the first sandbox", `(document.querySelector("main h1") || {}).textContent === "e2e box"`)
}
