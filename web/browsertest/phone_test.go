package browsertest

import (
	"testing"
)

// TestPhoneWidth: at 390×844 every page fits the screen (nothing sticks
// out sideways; wide tables scroll inside their own box), Log out is on
// screen, and axe finds nothing serious.
func TestPhoneWidth(t *testing.T) {
	chromiumPath(t)
	srv := newSandboxStack(t)
	srv.user(t, aliceEmail, alicePass)
	b := newBrowser(t, srv.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	if !srv.snapshots {
		b.allow(`^http: GET .*/sandbox/[^/]+/snapshots -> (404|503)$`)
	}
	b.viewport(390, 844)
	b.open("/")
	b.waitJS("login form", `!!document.querySelector('form[aria-label="Log in"]')`)
	check := func(page string) {
		t.Helper()
		for _, o := range b.overflow(390) {
			t.Errorf("%s at 390 px: %s", page, o)
		}
		b.axe(page + " (390 px)")
		b.shot("phone-" + page)
	}
	check("login")
	b.login(aliceEmail, alicePass)
	if !eval[bool](b, `(() => { const r = document.getElementById("logout").getBoundingClientRect(); return r.width > 0 && r.right <= 390 && r.bottom <= 844; })()`) {
		t.Errorf("Log out is off screen at 390 px")
	}
	b.createSandbox("phone box")
	check("sandbox")
	b.open("/#/sandboxes")
	b.waitJS("sandboxes list", `document.querySelectorAll("main table tbody tr").length > 0`)
	check("sandboxes")
	b.open("/#/tokens")
	b.waitJS("tokens page", `!!document.querySelector("main h2")`)
	check("tokens")
	b.open("/#/usage")
	b.waitJS("usage page", `!!document.querySelector("main h2")`)
	check("usage")
}
