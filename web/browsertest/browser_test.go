package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// need skips (or fails under TECHBOSS_REQUIRE_ALL=1) when a dependency is missing.
func need(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("TECHBOSS_REQUIRE_ALL") == "1" {
		t.Fatalf("missing dependency (TECHBOSS_REQUIRE_ALL=1): %s", what)
	}
	t.Skipf("skipping: %s", what)
}

// chromiumPath finds the system Chromium.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("TECHBOSS_CHROMIUM_BIN"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	need(t, "no Chromium found (apt-get install chromium, or set TECHBOSS_CHROMIUM_BIN)")
	return ""
}

// artifactsDir is where screenshots of failed tests go. It survives the test.
func artifactsDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TECHBOSS_TEST_ARTIFACTS")
	if base == "" {
		base = filepath.Join(os.TempDir(), "techboss-test-artifacts")
	}
	dir := filepath.Join(base, "browser", regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create artifacts dir: %v", err)
	}
	return dir
}

// problem is a console error, an uncaught exception or a failed request.
type problem struct{ kind, detail string }

// browser is one Chromium tab with problem tracking.
type browser struct {
	t       *testing.T
	ctx     context.Context
	base    string
	mu      sync.Mutex
	probs   []problem
	allowed []*regexp.Regexp
	reqURL  map[network.RequestID]string
	resumes []string // Last-Event-ID headers sent to /runs/{id}/events, in order
	sockets []string // URLs of the WebSockets the page opened, in order
}

// newBrowser starts a fresh headless Chromium (own profile dir) and opens
// one tab. The browser is closed at cleanup; on failure a screenshot and the
// page's DOM are written to the artifacts dir first.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	bin := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("mute-audio", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		// The desktop size the flows are checked at (see viewports).
		chromedp.WindowSize(1440, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, base: base, reqURL: map[network.RequestID]string{}}
	// Listen starts the browser and opens the tab; it must not run under a
	// timeout context, which would bound the browser's whole life.
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", bin, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b.saveArtifacts()
		}
		cancelCtx()
		cancelAlloc()
	})
	if vp, ok := testViewports.Load(t); ok {
		b.viewport(vp.(viewport).w, vp.(viewport).h)
	}
	return b
}

func (b *browser) onEvent(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				if a.Value != nil {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			b.probs = append(b.probs, problem{"console." + string(ev.Type), strings.Join(parts, " ")})
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			d += " " + ev.ExceptionDetails.Exception.Description
		}
		b.probs = append(b.probs, problem{"exception", d})
	case *log.EventEntryAdded:
		// Network failures are reported below with their URL; everything
		// else the browser logs as an error (CSP violations, …) counts.
		if ev.Entry.Level == log.EntryLevelError && ev.Entry.Source != log.EntrySourceNetwork {
			b.probs = append(b.probs, problem{"log." + string(ev.Entry.Source), ev.Entry.Text + " " + ev.Entry.URL})
		}
	case *network.EventRequestWillBeSent:
		b.reqURL[ev.RequestID] = ev.Request.Method + " " + ev.Request.URL
		if strings.Contains(ev.Request.URL, "/runs/") && strings.HasSuffix(ev.Request.URL, "/events") {
			id, _ := ev.Request.Headers["Last-Event-ID"].(string)
			b.resumes = append(b.resumes, id)
		}
	case *network.EventWebSocketCreated:
		b.sockets = append(b.sockets, ev.URL)
	case *network.EventResponseReceived:
		if ev.Response.Status >= 400 {
			b.probs = append(b.probs, problem{"http", fmt.Sprintf("%s -> %d", b.reqURL[ev.RequestID], ev.Response.Status)})
		}
	case *network.EventLoadingFailed:
		// A stream the page closes on purpose (navigation, reload, abort) is
		// "canceled"; anything else is a failed request.
		if !ev.Canceled && ev.ErrorText != "net::ERR_ABORTED" {
			b.probs = append(b.probs, problem{"request", b.reqURL[ev.RequestID] + ": " + ev.ErrorText})
		}
	}
}

// allow marks problems matching re as expected (e.g. the 401 of /auth/me
// before login, or the 404 a user gets for someone else's sandbox).
func (b *browser) allow(re string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allowed = append(b.allowed, regexp.MustCompile(re))
}

// allowSandboxStack allows what a sandbox stack (newSandboxStack: no run
// service) answers on every page: /auth/me before login (401), and the
// run and usage routes (503).
func (b *browser) allowSandboxStack() {
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.allow(`^http: GET .*/sandbox/[^/]+/runs -> 503$`)
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
}

// checkProblems fails the test for any unexpected console error, exception
// or failed request seen so far.
func (b *browser) checkProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, p := range b.probs {
		s := p.kind + ": " + p.detail
		for _, re := range b.allowed {
			if re.MatchString(s) {
				continue next
			}
		}
		b.t.Errorf("browser problem: %s", s)
	}
}

func (b *browser) saveArtifacts() {
	dir := artifactsDir(b.t)
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("could not capture screenshot: %v", err)
	}
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil {
		b.t.Logf("could not capture DOM: %v", err)
	}
	if len(png) > 0 {
		_ = os.WriteFile(filepath.Join(dir, "screenshot.png"), png, 0o644)
	}
	if html != "" {
		_ = os.WriteFile(filepath.Join(dir, "dom.html"), []byte(html), 0o644)
	}
	b.mu.Lock()
	var sb strings.Builder
	for _, p := range b.probs {
		fmt.Fprintf(&sb, "%s: %s\n", p.kind, p.detail)
	}
	b.mu.Unlock()
	_ = os.WriteFile(filepath.Join(dir, "problems.txt"), []byte(sb.String()), 0o644)
	b.t.Logf("browser artifacts written to %s", dir)
}

// guard is the deadline of one browser step: generous, only there so a
// broken page fails the test instead of hanging it.
const guard = 90 * time.Second

// do runs actions with a guard deadline and fails the test on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, guard)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := chromedp.Do(ctx, actions...)
		if err == nil {
			return
		}
		// The UI re-rendered the element between the query and the action
		// (a list refreshed): the action never reached the page, so it is
		// safe to query again.
		if attempt < 5 && ctx.Err() == nil && strings.Contains(err.Error(), "Could not find node with given id") {
			continue
		}
		b.t.Fatalf("%s: %v", what, err)
	}
}

// waitJS waits until the JavaScript expression is truthy. The page
// re-evaluates it on every animation frame; nothing sleeps.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	b.do("wait for "+what, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(guard-5*time.Second))(ctx, t)
		return err
	}))
}

// eval evaluates expr and decodes its value.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, guard)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// text returns the textContent of the first element matching sel ("" if none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
}

// count returns how many elements match sel.
func (b *browser) count(sel string) int {
	b.t.Helper()
	return eval[int](b, fmt.Sprintf(`document.querySelectorAll(%q).length`, sel))
}

// open navigates to a path of the server.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path))
}

// fill sets an input's value by its label text and fires input events.
func (b *browser) fillByLabel(label, value string) {
	b.t.Helper()
	sel := chromedp.Search(fmt.Sprintf(`//label[normalize-space(text())=%q]//*[self::input or self::textarea or self::select]`, label))
	node := fmt.Sprintf(`document.evaluate(%q, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue`, string(sel))
	// A view that renders again while the keys arrive (navigation just
	// happened) can replace the field: type again until the value is there.
	for attempt := 1; ; attempt++ {
		b.do("find "+label, chromedp.WaitVisible(sel))
		// Clear through the DOM, then type like a user.
		eval[bool](b, fmt.Sprintf(`(() => { const el = %s; el.value = ""; el.focus(); return true; })()`, node))
		b.do("type into "+label, chromedp.SendKeys(sel, value))
		if eval[bool](b, fmt.Sprintf(`(() => { const el = %s; return !!el && el.value === %q; })()`, node, value)) {
			return
		}
		if attempt == 3 {
			b.t.Fatalf("typing %q into %s did not stick", value, label)
		}
	}
}

// click clicks the first button (or link) whose text is exactly label.
func (b *browser) clickButton(label string) {
	b.t.Helper()
	sel := chromedp.Search(fmt.Sprintf(`//*[(self::button or self::a) and normalize-space(.)=%q and not(@disabled) and not(ancestor-or-self::*[@hidden])]`, label))
	b.do("click "+label, chromedp.WaitVisible(sel), chromedp.Click(sel))
}

// login fills the login form.
func (b *browser) login(email, password string) {
	b.t.Helper()
	b.fillByLabel("Email", email)
	b.fillByLabel("Password", password)
	b.clickButton("Log in")
	b.waitJS("logged in", `!document.getElementById("who").hidden`)
}

// confirm accepts the page's confirmation dialog.
func (b *browser) confirm() {
	b.t.Helper()
	b.waitJS("confirm dialog", `document.getElementById("confirm").open`)
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	b.waitJS("confirm dialog closed", `!document.getElementById("confirm").open`)
}

// shot saves a screenshot of the whole page as name.png in the test's
// artifacts dir (and in TECHBOSS_UI_SCREENSHOTS when that names a
// directory), for looking at the pages; tests never depend on it.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, guard)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	_ = os.WriteFile(filepath.Join(artifactsDir(b.t), name+".png"), png, 0o644)
	if dir := os.Getenv("TECHBOSS_UI_SCREENSHOTS"); dir != "" {
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	}
}

// colorScheme emulates prefers-color-scheme (light or dark).
// viewport sets the page's size in CSS pixels (a phone: 390×844).
func (b *browser) viewport(w, h int64) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, guard)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.EmulateViewport(w, h)); err != nil {
		b.t.Fatalf("viewport %dx%d: %v", w, h, err)
	}
}

// overflow lists what sticks out to the right of a w-pixel-wide page.
func (b *browser) overflow(w int) []string {
	b.t.Helper()
	return eval[[]string](b, fmt.Sprintf(`(() => {
		const out = [];
		if (document.documentElement.scrollWidth > %[1]d) out.push("page scrolls sideways: " + document.documentElement.scrollWidth + "px");
		// Inside a box that scrolls sideways itself is fine.
		const scrolls = (el) => { for (let p = el.parentElement; p; p = p.parentElement) { const o = getComputedStyle(p).overflowX; if (o === "auto" || o === "scroll") return true; } return false; };
		for (const el of document.querySelectorAll("header *, main *")) {
			const r = el.getBoundingClientRect();
			if (r.width > 0 && r.right > %[1]d + 1 && !scrolls(el)) out.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + "." + el.className + " right=" + Math.round(r.right));
		}
		return out.slice(0, 10);
	})()`, w))
}

func (b *browser) colorScheme(scheme string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, guard)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	}); err != nil {
		b.t.Fatalf("emulate %s: %v", scheme, err)
	}
}

// socketURLs returns the URLs of the WebSockets the page opened so far.
func (b *browser) socketURLs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.sockets...)
}

// resumeIDs returns the Last-Event-ID headers of the run event requests so far.
func (b *browser) resumeIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.resumes...)
}

// checkA11y fails the test for form controls without a label and buttons or
// links without an accessible name on the current page (hidden panels too).
func (b *browser) checkA11y(page string) {
	b.t.Helper()
	bad := eval[[]string](b, `(() => {
		const out = [];
		const name = (el) => (el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || el.textContent || el.title || "").trim();
		for (const el of document.querySelectorAll("main input, main select, main textarea, dialog input")) {
			if (el.type === "hidden") continue;
			if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby")) out.push(el.outerHTML.slice(0, 120));
		}
		for (const el of document.querySelectorAll("button, a[href]")) {
			if (!name(el)) out.push(el.outerHTML.slice(0, 120));
		}
		return out;
	})()`)
	for _, e := range bad {
		b.t.Errorf("%s: control without an accessible name: %s", page, e)
	}
	b.axe(page)
}

// axeSource is axe-core (TECHBOSS_AXE_JS, installed by scripts/deps.sh).
var axeSource = sync.OnceValues(func() (string, error) {
	p := os.Getenv("TECHBOSS_AXE_JS")
	if p == "" {
		return "", fmt.Errorf("TECHBOSS_AXE_JS is not set")
	}
	b, err := os.ReadFile(p)
	return string(b), err
})

// axe runs axe-core on the page as it is and fails on any violation
// (critical, serious, moderate or minor); every count is logged (and kept with the artifacts).
func (b *browser) axe(page string) {
	b.t.Helper()
	src, err := axeSource()
	if err != nil {
		need(b.t, "axe-core: "+err.Error()+" (scripts/deps.sh test installs it)")
		return
	}
	if !eval[bool](b, `typeof window.axe === "object"`) {
		eval[bool](b, src+"\n;true")
	}
	type violation struct {
		ID     string   `json:"id"`
		Impact string   `json:"impact"`
		Help   string   `json:"help"`
		Nodes  []string `json:"nodes"`
	}
	vs := eval[[]violation](b, `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations.map(v => ({
		id: v.id, impact: v.impact || "", help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " " + (n.failureSummary || "").split("\n").slice(1, 2).join(""))})))`)
	counts := map[string]int{}
	for _, v := range vs {
		counts[v.Impact]++
		// Every finding fails, moderate and minor too.
		b.t.Errorf("%s: axe %s (%s): %s at %v", page, v.ID, v.Impact, v.Help, v.Nodes)
	}
	b.t.Logf("axe %s: critical %d, serious %d, moderate %d, minor %d", page, counts["critical"], counts["serious"], counts["moderate"], counts["minor"])
	if dir := artifactsDir(b.t); dir != "" {
		f, err := os.OpenFile(filepath.Join(dir, "axe.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s %s: critical %d, serious %d, moderate %d, minor %d\n", b.t.Name(), page, counts["critical"], counts["serious"], counts["moderate"], counts["minor"])
			for _, v := range vs {
				fmt.Fprintf(f, "  %s %s: %s\n", v.Impact, v.ID, v.Help)
			}
			f.Close()
		}
	}
}

// viewport is a screen size the flows are checked at.
type viewport struct {
	name string
	w, h int64
}

// viewports are the desktop (1440×900) and phone (390×844) sizes.
var viewports = []viewport{{"desktop", 1440, 900}, {"phone", 390, 844}}

// testViewports holds the viewport of each forViewports subtest: the
// browsers it opens start at that size.
var testViewports sync.Map // *testing.T -> viewport

// forViewports runs f as a subtest at each viewport; newBrowser sizes the
// subtest's browsers.
func forViewports(t *testing.T, f func(t *testing.T, vp viewport)) {
	for _, vp := range viewports {
		t.Run(vp.name, func(t *testing.T) {
			testViewports.Store(t, vp)
			t.Cleanup(func() { testViewports.Delete(t) })
			f(t, vp)
		})
	}
}

// clickInList clicks the element the XPath names inside a list that
// refreshes itself (the sandbox list, whose rows are rendered again when
// the server's answer arrives). A mouse click goes to where the element
// was when it was measured: on a loaded machine the table could be laid
// out again in between and the click land on another row's control (a
// CI run deleted the sandbox whose name link it meant to open). The
// element itself is clicked instead, once it is there and enabled.
func (b *browser) clickInList(what, xpath string) {
	b.t.Helper()
	node := fmt.Sprintf(`document.evaluate(%q, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue`, xpath)
	b.waitJS(what, `(() => { const el = `+node+`; return !!el && !el.disabled && el.checkVisibility(); })()`)
	eval[bool](b, `(() => { `+node+`.click(); return true; })()`)
}

// clickAt clicks with the mouse at the centre of the element expr names,
// where it is on screen now (nothing scrolls it into view first).
func (b *browser) clickAt(what, expr string) {
	b.t.Helper()
	xy := eval[[]float64](b, `(() => { const r = (`+expr+`).getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`)
	b.do(what, chromedp.MouseClickXY(xy[0], xy[1]))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// shotBoth saves dark and light screenshots (see shot).
func (b *browser) shotBoth(name string) {
	b.t.Helper()
	b.colorScheme("dark")
	b.shot(name + "-dark")
	b.colorScheme("light")
	b.shot(name)
}

// createSandbox creates a sandbox through the form and waits for its page
// to show it running.
func (b *browser) createSandbox(name string) {
	b.t.Helper()
	b.fillByLabel("Name", name)
	b.clickButton("Create sandbox")
	// The tab list is the sandbox page's own: the list page's badges, still
	// shown for a frame after the hash changes, do not count.
	b.waitJS("sandbox page", `location.hash.startsWith("#/sandbox/") && !!document.querySelector('main [role=tablist]') && document.querySelector("main .badge") && document.querySelector("main .badge").textContent === "running"`)
}

// openAdvanced opens the create form's "Advanced" section (closed at first).
func (b *browser) openAdvanced() {
	b.t.Helper()
	const sum = `form[aria-labelledby="create-h"] details.advanced > summary`
	b.do("find Advanced", chromedp.WaitVisible(chromedp.CSS(sum)))
	if !eval[bool](b, `document.querySelector('form[aria-labelledby="create-h"] details.advanced').open`) {
		b.do("open Advanced", chromedp.Click(chromedp.CSS(sum)))
	}
	b.waitJS("Advanced open", `document.querySelector('form[aria-labelledby="create-h"] details.advanced').open`)
}
