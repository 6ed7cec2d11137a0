package browsertest

import (
	"strings"
	"testing"
)

// TestFocusMoves checks focus goes where the user needs it next: to the
// password field (described by the announced error) after a wrong password,
// to the page heading after logging in, and to the sandbox's heading when a
// sandbox opens (from the create form and from the list).
func TestFocusMoves(t *testing.T) { forViewports(t, testFocusMoves) }

func testFocusMoves(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.allow(`^http: POST .*/auth/login -> 401$`)
	b.allow(`^http: GET .*/sandbox/[^/]+/runs -> 503$`)
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	b.open("/")
	b.fillByLabel("Email", aliceEmail)
	b.fillByLabel("Password", "not-the-password")
	b.clickButton("Log in")
	b.waitJS("login error", `document.getElementById("login-err").textContent.length > 0`)
	b.waitJS("focus on the password field", `document.activeElement && document.activeElement.type === "password"`)
	if got := eval[string](b, `(() => { const p = document.activeElement; const d = document.getElementById(p.getAttribute("aria-describedby") || "none"); return (p.getAttribute("aria-invalid") || "") + "|" + (d ? d.getAttribute("role") + "|" + d.textContent : ""); })()`); !strings.HasPrefix(got, "true|alert|") {
		t.Errorf("the password field is not invalid and described by the alert: %q", got)
	}
	b.checkA11y("wrong password")

	b.login(aliceEmail, alicePass)
	b.waitJS("focus on the page heading", `document.activeElement && document.activeElement.tagName === "H1" && document.activeElement.textContent === "Sandboxes"`)

	b.createSandbox("focus")
	id := strings.TrimPrefix(eval[string](b, `location.hash`), "#/sandbox/")
	b.waitJS("focus on the sandbox heading", `document.activeElement && document.activeElement.tagName === "H1" && !!document.activeElement.closest("main")`)

	b.clickButton("← Sandboxes")
	b.waitJS("list", `!!document.querySelector('main tr[data-sandbox="`+id+`"] a')`)
	b.waitJS("focus on the list heading", `document.activeElement && document.activeElement.textContent === "Sandboxes"`)
	b.clickButton("focus")
	b.waitJS("focus on the sandbox heading again", `location.hash.startsWith("#/sandbox/") && document.activeElement && document.activeElement.tagName === "H1" && !!document.activeElement.closest("main")`)
	b.checkA11y("sandbox opened")
}
