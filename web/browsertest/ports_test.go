package browsertest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestProcessesUI starts a process from the Processes tab (the API's
// POST /sandbox/{id}/processes): it is listed as managed, its log follows
// live, a line sent to its stdin comes back, Stop ends it with its exit
// shown; a process started by a plain command (exec) is listed too, not
// marked managed.
func TestProcessesUI(t *testing.T) { forViewports(t, testProcessesUI) }

func testProcessesUI(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	requireRoutes(t, s, "POST /sandbox/{id}/processes", "GET /sandbox/{id}/processes",
		"GET /sandbox/{id}/processes/{pid}/logs", "POST /sandbox/{id}/processes/{pid}/stdin",
		"POST /sandbox/{id}/processes/{pid}/signal")
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allowSandboxStack()
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.createSandbox("procs")

	// One started by a command, outside the API.
	b.clickButton("Run command")
	b.fillByLabel("Command (run with sh -c in /workspace)", "nohup sleep 1000 >/dev/null 2>&1 &")
	b.clickButton("Run")
	b.waitJS("exec done", `(document.querySelector('#panel-exec [role="status"]') || {}).textContent?.startsWith("Exited with code 0")`)

	b.clickButton("Processes")
	b.checkA11y("processes")
	b.fillByLabel("Process name", "greeter")
	b.fillByLabel("Process command (run with sh -c in /workspace)", "echo hello-from-proc; exec cat")
	b.clickButton("Start")
	b.waitJS("listed as managed", `[...document.querySelectorAll('tr[data-managed="true"]')].some(r => r.textContent.includes("greeter"))`)
	b.waitJS("log shown", `(document.querySelector(".proc-logs") || {}).textContent?.includes("hello-from-proc")`)
	b.waitJS("the sleep listed, unmanaged", `[...document.querySelectorAll('tr[data-managed="false"]')].some(r => r.textContent.includes("sleep 1000"))`)
	b.fillByLabel("Standard input (a line)", "ping-over-stdin")
	b.clickButton("Send")
	b.waitJS("stdin echoed", `document.querySelector(".proc-logs").textContent.includes("ping-over-stdin")`)
	b.checkA11y("processes with logs")
	b.shotBoth("sandbox-processes")

	b.do("stop greeter", chromedp.Click(chromedp.CSS(`button[aria-label="Stop greeter"]`)))
	b.waitJS("exit in the log", `/^Exited with code/.test(document.querySelector("#panel-processes [role=status]").textContent)`)
	b.waitJS("shown exited", `[...document.querySelectorAll('tr[data-managed="true"]')].some(r => r.textContent.includes("greeter") && r.textContent.includes("exited"))`)

	b.viewport(390, 844)
	for _, o := range b.overflow(390) {
		t.Errorf("processes at 390 px: %s", o)
	}
	b.axe("processes (390 px)")
	b.checkProblems()
}

// TestPortsUI: a python3 -m http.server started through exec shows up in
// the Ports tab; its Open preview link loads the directory listing through
// the server's proxy; a share link opens it without a session and stops
// working once revoked.
func TestPortsUI(t *testing.T) { forViewports(t, testPortsUI) }

func testPortsUI(t *testing.T, vp viewport) {
	s := newSandboxStack(t)
	requireRoutes(t, s, "GET /sandbox/{id}/ports", "POST /sandbox/{id}/ports/{port}/links",
		"GET /sandbox/{id}/ports/{port}/links", "DELETE /sandbox/{id}/ports/{port}/links/{link_id}")
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allowSandboxStack()
	b.open("/")
	b.login(aliceEmail, alicePass)
	b.createSandbox("ports")
	id := strings.TrimPrefix(eval[string](b, `location.hash`), "#/sandbox/")

	b.clickButton("Run command")
	b.fillByLabel("Command (run with sh -c in /workspace)", "echo preview-ok > index-marker.txt; nohup python3 -m http.server 8765 >/dev/null 2>&1 &")
	b.clickButton("Run")
	b.waitJS("exec done", `(document.querySelector('#panel-exec [role="status"]') || {}).textContent?.startsWith("Exited with code 0")`)

	b.clickButton("Ports")
	b.waitJS("port listed", `!!document.querySelector('tr[data-port="8765"]')`)
	b.checkA11y("ports")
	b.shotBoth("sandbox-ports")
	href := eval[string](b, `document.querySelector('tr[data-port="8765"] a').href`)
	if want := fmt.Sprintf("/sandbox/%s/ports/8765/", id); !strings.HasSuffix(href, want) {
		t.Errorf("got preview link %q, want …%s", href, want)
	}
	if target := eval[string](b, `document.querySelector('tr[data-port="8765"] a').target`); target != "_blank" {
		t.Errorf("got target %q, want the preview in a new tab", target)
	}

	// Share link: made, listed, usable without a session, then revoked.
	b.do("share port 8765", chromedp.Click(chromedp.CSS(`button[aria-label="Share link for port 8765"]`)))
	b.clickButton("Create link")
	b.waitJS("link shown", `!!document.querySelector('input[aria-label="Share link URL"]')`)
	link := eval[string](b, `document.querySelector('input[aria-label="Share link URL"]').value`)
	b.waitJS("link listed", `document.querySelectorAll("tr[data-link]").length === 1`)
	if got := eval[string](b, `document.activeElement.getAttribute("aria-label") || ""`); got != "Share link URL" {
		t.Errorf("focus on %q after creating a link, want the link", got)
	}
	status, body := get(t, link)
	if status != http.StatusOK || !strings.Contains(body, "index-marker.txt") {
		t.Errorf("share link without a session: got %d %.200q, want 200 with the listing", status, body)
	}
	b.do("revoke", chromedp.Click(chromedp.CSS(`tr[data-link] button.danger`)))
	b.waitJS("revoked", `document.querySelectorAll("tr[data-link]").length === 0`)
	if status, _ := get(t, link); status < 400 {
		t.Errorf("revoked share link: got %d, want refused", status)
	}

	b.viewport(390, 844)
	for _, o := range b.overflow(390) {
		t.Errorf("ports at 390 px: %s", o)
	}
	b.axe("ports (390 px)")
	b.viewport(1280, 1000)

	// Open preview loads the app through the proxy (same tab here).
	b.allow(`favicon\.ico`) // the app has none; the browser asks anyway
	b.open(strings.TrimPrefix(href, s.url))
	b.waitJS("listing", `document.body && document.body.textContent.includes("index-marker.txt")`)
	b.checkProblems()
}

// get fetches url without the user's session, as someone the link was
// given to (a fresh cookie jar: the link may trade its token for a cookie
// scoped to the preview) and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := (&http.Client{Jar: jar}).Get(url)
	if err != nil {
		t.Fatalf("get %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
