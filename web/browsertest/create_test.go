package browsertest

import (
	"strings"
	"testing"
)

// TestCreateFailureShownOnce creates a sandbox whose build fails: the cause
// is said once, next to the field that caused it, focus goes there, and the
// list shows the failed sandbox right away (not "No sandboxes yet").
func TestCreateFailureShownOnce(t *testing.T) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.allow(`^http: GET .*/sandbox/[^/]+/runs -> 503$`)
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	b.allow(`^http: POST .*/sandbox -> 422$`)
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.waitJS("empty list", `!document.querySelector("main p.empty-list").hidden`)
	b.fillByLabel("Name", "broken")
	b.fillByLabel("Dockerfile commands", "RUN exit 3")
	b.clickButton("Create sandbox")
	const form = `document.querySelector('form[aria-labelledby="create-h"]')`
	b.waitJS("create settled", `!`+form+`.querySelector("button[type=submit]").disabled && `+form+`.textContent.includes("exit")`)
	text := eval[string](b, form+`.innerText`)
	if n := strings.Count(text, "RUN exit 3"); n != 1 {
		t.Errorf("the build failure is said %d times, want once:\n%s", n, text)
	}
	if got := eval[string](b, `document.querySelector('[data-for="dockerfile_commands"]').textContent`); !strings.Contains(got, "RUN exit 3") {
		t.Errorf("the error is not next to Dockerfile commands: %q", got)
	}
	b.waitJS("focus on the field at fault", `document.activeElement.getAttribute("aria-describedby") === "create-err-dockerfile_commands"`)
	if got := eval[string](b, `document.activeElement.getAttribute("aria-invalid") || ""`); got != "true" {
		t.Errorf("the field at fault is not marked aria-invalid (%q)", got)
	}
	// The failed sandbox is listed without reloading.
	b.waitJS("failed sandbox listed", `document.querySelector("main p.empty-list").hidden && [...document.querySelectorAll("main tbody .badge")].some((e) => e.textContent === "failed")`)
	b.checkA11y("create failed")
}
