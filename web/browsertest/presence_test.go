package browsertest

import (
	"strings"
	"testing"
)

// TestPresenceAvatars: alice shares a sandbox with bob (to use); both open
// its terminal, and alice's page shows two avatars (initials, the email as
// the accessible name and tooltip), from polling the presence route; when
// bob leaves, his avatar goes. At 1440×900 and 390×844.
func TestPresenceAvatars(t *testing.T) { forViewports(t, testPresenceAvatars) }

func testPresenceAvatars(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	requireRoutes(t, s, "GET /sandbox/{id}/presence")
	s.user(t, aliceEmail, alicePass)
	s.user(t, bobEmail, bobPass)
	b := newBrowser(t, s.url)
	b.allowSandboxStack()
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.createSandbox("watched box")
	id := strings.TrimPrefix(eval[string](b, `location.hash`), "#/sandbox/")
	if ok := eval[bool](b, `fetch("/sandbox/`+id+`/shares", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({user: `+jsString(bobEmail)+`, role: "operator"})}).then((r) => r.ok)`); !ok {
		t.Fatal("share with bob refused")
	}
	b.open("/#/sandbox/" + id + "/terminal")
	b.waitJS("alice's avatar", `(() => { const l = [...document.querySelectorAll("ul.presence li")]; return l.length === 1 && l[0].title === `+jsString(aliceEmail)+`; })()`)

	bob := newBrowser(t, s.url)
	bob.allowSandboxStack()
	bob.open("/")
	bob.login(bobEmail, bobPass)
	bob.open("/#/sandbox/" + id + "/terminal")
	two := `(() => { const l = [...document.querySelectorAll("ul.presence li")].map((li) => li.title + "|" + li.textContent).sort();
	  return l.length === 2 && l[0] === "alice@example.com|ALalice@example.com" && l[1] === "bob@example.com|BObob@example.com"; })()`
	b.waitJS("two avatars on alice's page", two)
	bob.waitJS("two avatars on bob's page", two)
	b.checkA11y("sandbox, two watching")
	b.shot("presence-" + vp.name)

	// Bob leaves: his avatar goes from alice's page.
	bob.open("/#/sandboxes")
	b.waitJS("bob gone", `(() => { const l = [...document.querySelectorAll("ul.presence li")]; return l.length === 1 && l[0].title === `+jsString(aliceEmail)+`; })()`)
	b.checkProblems()
	bob.checkProblems()
}
