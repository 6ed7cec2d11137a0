package browsertest

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestCreateFailureShownOnce creates a sandbox whose build fails: the cause
// is said once, next to the field that caused it, focus goes there, and the
// list shows the failed sandbox right away (not "No sandboxes yet").
func TestCreateFailureShownOnce(t *testing.T) { forViewports(t, testCreateFailureShownOnce) }

func testCreateFailureShownOnce(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allowSandboxStack()
	b.allow(`^http: POST .*/sandbox -> 422$`)
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.waitJS("empty list", `(document.querySelector("main p.empty-list") || { hidden: true }).hidden === false`)
	b.fillByLabel("Name", "broken")
	b.openAdvanced()
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

// TestOneClickCreate checks the create form shows only the image and the
// name, keeps the rest under a closed "Advanced" that the keyboard opens,
// and creates with one click.
func TestOneClickCreate(t *testing.T) { forViewports(t, testOneClickCreate) }

func testOneClickCreate(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allowSandboxStack()
	b.open("/")
	b.login(aliceEmail, alicePass)
	const form = `document.querySelector('form[aria-labelledby="create-h"]')`
	b.waitJS("create form", `!!`+form)
	visible := eval[[]string](b, `[...`+form+`.querySelectorAll("input, select, textarea")].filter((el) => el.checkVisibility()).map((el) => el.labels[0].firstChild.textContent.trim())`)
	if strings.Join(visible, ",") != "Name,Image" {
		t.Errorf("the create form shows %v, want only Name and Image", visible)
	}
	if eval[bool](b, form+`.querySelector("details.advanced").open`) {
		t.Errorf("Advanced is open at first")
	}
	b.checkA11y("create form")
	// Keyboard: Tab from Image reaches the summary, Enter opens it.
	eval[bool](b, `(() => { document.querySelector('[aria-describedby="create-err-image_base"]').focus(); return true; })()`)
	b.do("tab to Advanced", chromedp.KeyEvent(kb.Tab))
	b.waitJS("Advanced focused", `document.activeElement.tagName === "SUMMARY"`)
	b.do("open Advanced", chromedp.KeyEvent(kb.Enter))
	b.waitJS("Advanced open", form+`.querySelector("details.advanced").open && document.querySelector('[aria-describedby="create-err-memory_mb"]').checkVisibility()`)
	b.checkA11y("create form, Advanced open")
	// One click (after a name) creates.
	b.createSandbox("one-click")
}

// TestDeleteFailedSandbox: a sandbox whose build failed is not a dead
// end. Its row has Delete (the row goes at once, and stays gone after a
// reload), and its own page offers Delete instead of a disabled
// Terminate, which goes back to the list without it.
func TestDeleteFailedSandbox(t *testing.T) {
	s := newSandboxStack(t)
	s.user(t, aliceEmail, alicePass)
	forViewports(t, func(t *testing.T, vp viewport) {
		b := newBrowser(t, s.url)
		b.allowSandboxStack()
		b.allow(`^http: POST .*/sandbox -> 422$`)
		b.viewport(vp.w, vp.h)
		b.open("/")
		b.login(aliceEmail, alicePass)
		fail := func(name string) {
			t.Helper()
			b.fillByLabel("Name", name)
			b.openAdvanced()
			b.fillByLabel("Dockerfile commands", "RUN exit 3")
			b.clickButton("Create sandbox")
			b.waitJS("failed sandbox listed", `[...document.querySelectorAll("main tbody tr")].some((r) => r.textContent.includes(`+jsString(name)+`) && r.querySelector(".badge.failed"))`)
		}
		row := func(name string) string {
			return `[...document.querySelectorAll("main tbody tr")].find((r) => !r.hidden && r.textContent.includes(` + jsString(name) + `))`
		}
		// From the list.
		fail("dead-" + vp.name)
		b.clickInList("delete from the list", `//tr[contains(., "dead-`+vp.name+`")]//button[normalize-space(.)="Delete"]`)
		b.waitJS("row gone", `!`+row("dead-"+vp.name))
		b.checkA11y("list after delete (" + vp.name + ")")
		b.do("reload", chromedp.Reload())
		b.waitJS("still gone after reload", `(document.querySelector("main p.empty-list") || { hidden: true }).hidden === false`)
		// From its page.
		fail("page-" + vp.name)
		b.clickInList("open the failed sandbox", `//tr[contains(., "page-`+vp.name+`")]//a`)
		b.waitJS("its page says failed", `(document.querySelector("main .badge") || {}).textContent === "failed"`)
		b.clickButton("Delete")
		b.confirm()
		b.waitJS("back on the list without it", `location.hash === "#/sandboxes" && !!document.querySelector("main tbody") && !document.querySelector("main .badge.failed")`)
		b.shot("deleted-" + vp.name)
		b.checkProblems()
	})
}
