package browsertest

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/techbossai/techboss/internal/modeltest"
)

// TestApprovalInBrowser: a run that asks before tools run shows the call
// readably (the command), waits, and runs it once allowed from the page by
// keyboard; a denied Write is refused with the reason the user typed.
func TestApprovalInBrowser(t *testing.T) { forViewports(t, testApprovalInBrowser) }

func testApprovalInBrowser(t *testing.T, vp viewport) {
	chromiumPath(t)
	srv := newAgentStack(t,
		modeltest.Bash("echo approved-in-browser > /workspace/approved.txt && cat /workspace/approved.txt"),
		modeltest.Write("/workspace/denied.txt", "should not exist\n"),
		modeltest.Text("Finished."),
	)
	srv.user(t, aliceEmail, alicePass)
	b := newBrowser(t, srv.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	if !srv.snapshots {
		b.allow(`^http: GET .*/sandbox/[^/]+/snapshots -> (404|503)$`)
	}
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.createSandbox("approvals box")

	b.do("ask before tools", chromedp.Click(chromedp.CSS(`form.composer input[name=ask]`)))
	b.fillByLabel("Prompt", "Write two files")
	b.clickButton("Send")
	b.waitJS("approval card", `(document.querySelector(".approval .approval-summary") || {}).textContent?.includes("$ echo approved-in-browser")`)
	b.shot("approval-pending")
	// Keyboard: focus the card, press a.
	b.do("focus the card", chromedp.Focus(chromedp.CSS(`.approval`)))
	b.do("allow with a", chromedp.KeyEvent("a"))
	b.waitJS("allowed", `(document.querySelector(".approval.allowed [role=status]") || {}).textContent?.startsWith("Allowed by")`)
	b.waitJS("tool output", `[...document.querySelectorAll(".run .tool-output")].some(e => e.textContent.includes("approved-in-browser"))`)

	// The second call: deny with a reason.
	b.waitJS("second approval", `document.querySelectorAll(".approval").length === 2`)
	b.do("type a reason", chromedp.SendKeys(chromedp.CSS(`.approval:not(.allowed) input[type=text]`), "not that file"))
	b.do("deny", chromedp.Click(chromedp.CSS(`.approval:not(.allowed) button.danger`)))
	b.waitJS("denied", `(document.querySelector(".approval.denied [role=status]") || {}).textContent?.includes("not that file")`)
	b.waitJS("run done", `["succeeded", "completed"].includes(document.querySelector(".run .badge").textContent)`)
	if txt := b.text(".run"); !strings.Contains(txt, "Finished.") {
		t.Errorf("the run did not finish after the denial: %q", txt)
	}
	b.checkA11y("approvals")
}
