package browsertest

import (
	"testing"

	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestReconnectingLine stops the PostgreSQL under a running server while
// the API tokens page is open. The next call answers 503 unavailable with
// Retry-After: the page shows one calm "Reconnecting… retrying in N s"
// line (no error in the panels), counts down, probes, and once the
// database is back clears the line, reloads the page's data and works.
func TestReconnectingLine(t *testing.T) { forViewports(t, testReconnectingLine) }

func testReconnectingLine(t *testing.T, vp viewport) {
	pg := storetest.StartPGServer(t)
	s := buildStack(t, stackOptions{dbURL: pg.URL})
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.allow(`^http: GET .*/sandbox(\?[^/]*)? -> 503$`) // this stack runs no sandbox manager
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.clickButton("API tokens")
	b.waitJS("tokens listed", `document.querySelector("tbody") && document.querySelector("tbody").textContent.includes("No tokens.")`)

	pg.Stop()
	up := false
	t.Cleanup(func() {
		if !up {
			pg.Start()
		}
	})
	b.allow(`^http: (GET|POST) .*/auth/(tokens|me) -> 503$`) // the outage, said once by the line
	b.allow(`^http: GET .*/teams -> 503$`)                   // the team switcher, during the outage
	b.fillByLabel("Name", "during the outage")
	b.clickButton("Create token")
	b.waitJS("reconnecting line", `(() => { const c = document.getElementById("conn");
		return !c.hidden && /^Reconnecting… retrying in \d+ s$/.test(c.textContent); })()`)
	if errs := eval[[]string](b, `[...document.querySelectorAll(".error")].map(e => e.textContent).filter(Boolean)`); len(errs) != 0 {
		t.Errorf("error boxes shown while reconnecting: %q; want only the connection line", errs)
	}
	if n := eval[int](b, `[...document.querySelectorAll("[role=status]")].filter(e => !e.hidden && e.textContent.includes("Reconnecting")).length`); n != 1 {
		t.Errorf("got %d reconnecting lines, want 1", n)
	}
	b.shot("reconnecting")
	b.checkA11y("reconnecting")

	pg.Start()
	up = true
	b.waitJS("line cleared", `document.getElementById("conn").hidden`)
	b.waitJS("tokens reloaded", `document.querySelector("tbody") && document.querySelector("tbody").textContent.includes("No tokens.")`)
	b.fillByLabel("Name", "after the outage")
	b.clickButton("Create token")
	b.waitJS("token shown", `!!document.querySelector("input.token-once")`)
	b.checkProblems()
}
