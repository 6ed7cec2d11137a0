package browsertest

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestTeamsAndSharing: the team switcher (create a team, a sandbox made in
// it is listed under the team and not under Personal) and the Share
// dialog (a bad email said next to the field; a share listed; focus back
// on Share when it closes); the person shared with finds the sandbox under
// "Shared with me", without Share or Terminate. At 1440×900 and 390×844.
func TestTeamsAndSharing(t *testing.T) { forViewports(t, testTeamsAndSharing) }

func testTeamsAndSharing(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	s.user(t, bobEmail, bobPass)
	b := newBrowser(t, s.url)
	b.allowSandboxStack()
	b.allow(`^http: POST .*/shares -> 422$`)
	b.open("/")
	b.login(aliceEmail, alicePass)
	scope := func(b *browser, value string) {
		t.Helper()
		eval[bool](b, `(() => { const s = document.querySelector("select[name=scope]"); s.value = `+jsString(value)+`; s.dispatchEvent(new Event("change")); return true; })()`)
	}

	// A team, chosen at once.
	b.do("open Teams", chromedp.Click(chromedp.CSS(`details.teams > summary`)))
	b.fillByLabel("New team", "core")
	b.clickButton("Create team")
	b.waitJS("team chosen", `(() => { const s = document.querySelector("select[name=scope]"); return s.value.startsWith("tm_") && s.selectedOptions[0].textContent === "Team core"; })()`)
	b.checkA11y("sandboxes, team chosen")
	b.createSandbox("team box")
	id := strings.TrimPrefix(eval[string](b, `location.hash`), "#/sandbox/")
	if team := eval[string](b, `fetch("/sandbox/`+id+`").then((r) => r.json()).then((j) => j.data.team_id || "")`); !strings.HasPrefix(team, "tm_") {
		t.Fatalf("the sandbox was not created in the team (team_id %q)", team)
	}
	b.clickButton("← Sandboxes")
	b.waitJS("listed under the team", `[...document.querySelectorAll("main tbody tr")].some((r) => r.textContent.includes("team box"))`)
	// Nothing is shared with alice: the switcher changes the list.
	scope(b, "shared")
	b.waitJS("nothing shared with alice", `!document.querySelector("main p.empty-list").hidden`)
	scope(b, eval[string](b, `[...document.querySelectorAll("select[name=scope] option")].find((o) => o.textContent === "Team core").value`))
	b.waitJS("back under the team", `[...document.querySelectorAll("main tbody tr")].some((r) => r.textContent.includes("team box"))`)

	// Share it with bob.
	b.open("/#/sandbox/" + id)
	b.clickButton("Share")
	b.waitJS("dialog open, focus in Email", `document.querySelector("dialog.share-dialog")?.open && document.activeElement.name === "user"`)
	b.fillByLabel("Email", "nobody@example.com")
	b.clickButton("Add person")
	b.waitJS("the bad email said next to it", `document.getElementById("share-err").textContent.trim() !== "" && document.querySelector("dialog.share-dialog input[name=user]").getAttribute("aria-invalid") === "true"`)
	b.checkA11y("share dialog, an error")
	b.fillByLabel("Email", bobEmail)
	b.clickButton("Add person")
	b.waitJS("bob listed", `[...document.querySelectorAll("dialog.share-dialog .shares li")].some((li) => li.textContent.includes(`+jsString(bobEmail)+`) && li.textContent.includes("can view"))`)
	if got := eval[string](b, `document.getElementById("share-err").textContent`); got != "" {
		t.Errorf("the earlier error stayed: %q", got)
	}
	b.shot("share-dialog-" + vp.name)
	b.clickButton("Close")
	b.waitJS("focus back on Share", `!document.querySelector("dialog.share-dialog") && document.activeElement.textContent === "Share"`)
	b.checkProblems()

	// Bob finds it under "Shared with me", to view only.
	bob := newBrowser(t, s.url)
	bob.allowSandboxStack()
	bob.open("/")
	bob.login(bobEmail, bobPass)
	bob.waitJS("bob's own list is empty", `!document.querySelector("main p.empty-list").hidden`)
	scope(bob, "shared")
	bob.waitJS("shared with bob", `[...document.querySelectorAll("main tbody tr")].some((r) => r.textContent.includes("team box"))`)
	bob.clickInList("open it", `//tr[contains(., "team box")]//a`)
	bob.waitJS("its page", `(document.querySelector("main .badge") || {}).textContent === "running"`)
	bob.waitJS("view only", `[...document.querySelectorAll("main button")].every((b) => !["Share", "Terminate"].includes(b.textContent) || b.hidden) && document.querySelector("form.composer").textContent.includes("shared with you to view")`)
	bob.checkA11y("a sandbox shared to view")
	bob.checkProblems()
}
