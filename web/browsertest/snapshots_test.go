package browsertest

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestSnapshotsTab: a snapshot taken with a label shows it (timeline and
// the compare choices), and comparing two versions opens a changed file
// side by side: the changed line against its old self, unchanged
// stretches folded, an added file on the right only. The Files and
// Snapshots tabs pass axe. At 1440×900 and 390×844.
func TestSnapshotsTab(t *testing.T) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	forViewports(t, func(t *testing.T, vp viewport) {
		b := newBrowser(t, s.url)
		b.allowSandboxStack()
		b.viewport(vp.w, vp.h)
		b.open("/")
		b.login(aliceEmail, alicePass)
		b.createSandbox("snaps " + vp.name)
		run := func(cmd string) {
			t.Helper()
			b.clickButton("Run command")
			b.fillByLabel("Command (run with sh -c in /workspace)", cmd)
			b.clickButton("Run")
			b.waitJS("command done", `document.querySelector("#panel-exec [role=status]").textContent.includes("Exited with code 0")`)
		}
		run("mkdir -p src && seq 1 30 | sed 's/^/line /' > src/a.txt")

		// The Files tab with a file open passes axe.
		b.clickButton("Files")
		b.do("expand src", chromedp.Click(chromedp.CSS(`li[data-path="src"] > .file-row button[aria-expanded]`)))
		b.do("open a.txt", chromedp.Click(chromedp.CSS(`li[data-path="src/a.txt"] .file-row button.link`)))
		b.waitJS("a.txt content", `(document.querySelector(".file-content") || {}).textContent?.startsWith("line 1\n")`)
		b.checkA11y("files, a file open (" + vp.name + ")")

		b.clickButton("Snapshots")
		b.fillByLabel("Label (optional)", "before the fix")
		b.clickButton("Create snapshot")
		b.waitJS("labelled snapshot listed", `[...document.querySelectorAll(".timeline li strong")].some((e) => e.textContent === "before the fix")`)
		run("sed -i 's/^line 15$/line fifteen/' src/a.txt && echo hello > new.txt")
		b.clickButton("Snapshots")
		b.clickButton("Create snapshot")
		b.waitJS("two snapshots", `document.querySelectorAll(".timeline li[data-snapshot]").length === 2`)
		if got := eval[string](b, `document.querySelector('form[aria-label="Compare snapshots"] select').selectedOptions[0].textContent`); !strings.HasPrefix(got, "before the fix (") {
			t.Errorf("From is %q, want the labelled version", got)
		}
		b.clickButton("Compare")
		b.waitJS("changed file listed", `!!document.querySelector('details.snap-file[data-path="src/a.txt"]')`)
		b.do("open src/a.txt", chromedp.Click(chromedp.CSS(`details.snap-file[data-path="src/a.txt"] > summary`)))
		b.waitJS("side by side", `!!document.querySelector('details.snap-file[data-path="src/a.txt"] table.sbs')`)
		row := eval[[]string](b, `[...document.querySelectorAll('details.snap-file[data-path="src/a.txt"] tr.change td')].map((td) => td.textContent)`)
		if strings.Join(row, "|") != "15|line 15|15|line fifteen" {
			t.Errorf("the changed row is %q, want line 15 against line fifteen", row)
		}
		if folds := eval[[]string](b, `[...document.querySelectorAll('details.snap-file[data-path="src/a.txt"] tr.fold')].map((tr) => tr.textContent)`); strings.Join(folds, "|") != "11 unchanged lines|12 unchanged lines" {
			t.Errorf("folded stretches %q, want 11 and 12 unchanged lines (3 kept around the change)", folds)
		}
		b.do("open new.txt", chromedp.Click(chromedp.CSS(`details.snap-file[data-path="new.txt"] > summary`)))
		b.waitJS("added file on the right only", `(() => { const tds = [...document.querySelectorAll('details.snap-file[data-path="new.txt"] tbody tr td')].map((td) => td.textContent); return tds.join("|") === "||1|hello"; })()`)
		b.checkA11y("snapshots, two versions compared (" + vp.name + ")")
		if vp.name == "phone" {
			for _, o := range b.overflow(int(vp.w)) {
				t.Errorf("snapshots at %d px: %s", vp.w, o)
			}
		}
		b.shotBoth("snapshots-compare-" + vp.name)
		b.checkProblems()
	})
}
