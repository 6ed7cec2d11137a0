package browsertest

import (
	"strings"
	"testing"

	"github.com/techbossai/techboss/internal/modeltest"
)

// TestCancelPinned: while a run streams, Cancel stays on screen however
// far the transcript scrolls (the composer is pinned to the bottom), at
// 1440×900 and at 390×844, and it cancels the run.
func TestCancelPinned(t *testing.T) {
	s := newAgentStack(t, modeltest.Hang("Thinking hard about"), modeltest.Hang("Thinking hard about"))
	s.user(t, aliceEmail, alicePass)
	var lines []string
	for i := range 150 {
		lines = append(lines, "line "+strings.Repeat("x", i%40))
	}
	long := strings.Join(lines, "\n")
	forViewports(t, func(t *testing.T, vp viewport) {
		b := newBrowser(t, s.url)
		b.allow(`^http: GET .*/auth/me -> 401$`)
		b.viewport(vp.w, vp.h)
		b.open("/")
		b.login(aliceEmail, alicePass)
		b.createSandbox("cancel " + vp.name)
		// A prompt 150 lines long makes the run taller than the screen.
		eval[bool](b, `(() => { document.querySelector("textarea[name=prompt]").value = `+jsString(long)+`; return true; })()`)
		b.clickButton("Send")
		b.waitJS("streaming", `(document.querySelector(".run .text.streaming") || {}).textContent?.includes("Thinking")`)
		if h := eval[float64](b, `document.querySelector(".run").getBoundingClientRect().height`); h <= float64(vp.h) {
			t.Fatalf("the run is %v px tall, not taller than the %d px screen", h, vp.h)
		}
		// Scrolled to the top of the page, and to the bottom: Cancel is on
		// screen and nothing covers it.
		onScreen := `(() => { const c = [...document.querySelectorAll("button")].find((b) => b.textContent === "Cancel run" && !b.hidden);
			if (!c) return false; const r = c.getBoundingClientRect();
			return r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth &&
				document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === c; })()`
		for _, where := range []string{"0", "document.documentElement.scrollHeight"} {
			eval[bool](b, `(() => { window.scrollTo(0, `+where+`); return true; })()`)
			b.waitJS("Cancel on screen (scrolled to "+where+")", onScreen)
		}
		eval[bool](b, `(() => { window.scrollTo(0, 0); return true; })()`)
		b.axe("live run, pinned composer (" + vp.name + ")")
		b.shot("cancel-pinned-" + vp.name)
		b.clickAt("cancel where it is", `[...document.querySelectorAll("button")].find((b) => b.textContent === "Cancel run")`)
		b.waitJS("cancelled", `["cancelled", "canceled"].includes(document.querySelector(".run .badge").textContent)`)
		b.waitJS("composer back in place", `!document.querySelector("form.composer").classList.contains("running")`)
		b.checkProblems()
	})
}
