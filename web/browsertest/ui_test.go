package browsertest

import (
	"encoding/json"
	"strings"
	"testing"
)

const (
	aliceEmail = "alice@example.com"
	alicePass  = "correct horse battery staple"
	bobEmail   = "bob@example.com"
	bobPass    = "another long passphrase"
)

// TestLoginTokensLogout logs in through the form, creates an API token
// (shown once), revokes it after confirming, and logs out.
func TestLoginTokensLogout(t *testing.T) { forViewports(t, testLoginTokensLogout) }

func testLoginTokensLogout(t *testing.T, vp viewport) {
	s := newStack(t)
	s.user(t, aliceEmail, alicePass)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)           // the probe before logging in
	b.allow(`^http: GET .*/sandbox(\?[^/]*)? -> 503$`) // this stack runs no sandbox manager
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)

	b.open("/")
	b.waitJS("login form", `!!document.querySelector('form[aria-label="Log in"]')`)
	b.shot("login")
	b.checkA11y("login")
	if got := eval[string](b, `location.pathname`); got != "/static/modal-sandbox-ui.html" {
		t.Errorf("got path %q after opening /, want the app", got)
	}

	// A wrong password is reported next to the form, not as a page error.
	b.allow(`^http: POST .*/auth/login -> 401$`)
	b.fillByLabel("Email", aliceEmail)
	b.fillByLabel("Password", "wrong password!!")
	b.clickButton("Log in")
	b.waitJS("login error", `document.querySelector('form[aria-label="Log in"] .error').textContent.length > 0`)

	b.login(aliceEmail, alicePass)
	if got := b.text("#who-email"); got != aliceEmail {
		t.Errorf("got header email %q, want %q", got, aliceEmail)
	}

	b.shot("sandboxes-empty")
	b.clickButton("API tokens")
	b.fillByLabel("Name", "ci token")
	b.clickButton("Create token")
	b.waitJS("token shown", `!!document.querySelector("input.token-once")`)
	secret := eval[string](b, `document.querySelector("input.token-once").value`)
	if len(secret) < 20 {
		t.Fatalf("got token %q, want a long secret", secret)
	}
	b.shot("token-created")
	b.checkA11y("tokens")
	b.waitJS("token listed", `[...document.querySelectorAll("tbody tr")].some(r => r.textContent.includes("ci token"))`)
	if html := eval[string](b, `document.querySelector("table").textContent`); strings.Contains(html, secret) {
		t.Errorf("token list shows the secret; it must be shown only once")
	}

	b.clickButton("Revoke")
	b.confirm()
	b.waitJS("token revoked", `[...document.querySelectorAll("tbody tr")].some(r => r.textContent.includes("revoked"))`)

	b.clickButton("Log out")
	b.waitJS("login form again", `!!document.querySelector('form[aria-label="Log in"]')`)
	b.open("/static/modal-sandbox-ui.html#/tokens")
	b.waitJS("still logged out after reload", `!!document.querySelector('form[aria-label="Log in"]')`)
	b.checkProblems()
}

// TestMarkdownIsInert feeds hostile Markdown to the renderer the chat uses
// and checks that no element or handler came out of it.
func TestMarkdownIsInert(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.open("/static/modal-sandbox-ui.html")
	b.waitJS("app loaded", `!!document.querySelector('form[aria-label="Log in"]')`)
	got := eval[map[string]any](b, `(async () => {
		const { renderMarkdown } = await import("/static/md.js");
		window.__pwned = 0;
		const src = "# Title <script>window.__pwned=1</script>\n\n" +
			"<img src=x onerror=\"window.__pwned=2\"> **bold <b>b</b>** [x](javascript:window.__pwned=3)\n\n" +
			"![i](x onerror=window.__pwned=4) <a href=\"javascript:alert(1)\">a</a>\n\n" +
			"`+"```html\\n<iframe src=\\\"javascript:window.__pwned=5\\\"></iframe>\\n```"+`\n\n- item <svg onload=window.__pwned=6>\n";
		const div = document.createElement("div");
		div.append(renderMarkdown(src));
		document.body.append(div);
		await new Promise(r => setTimeout(r, 50));
		const tags = [...div.querySelectorAll("*")].map(e => e.tagName.toLowerCase());
		const attrs = [...div.querySelectorAll("*")].flatMap(e => [...e.attributes].map(a => a.name));
		const out = { pwned: window.__pwned, tags: [...new Set(tags)].sort().join(","), attrs: [...new Set(attrs)].sort().join(","),
			text: div.textContent, links: [...div.querySelectorAll("a")].map(a => a.href).join(",") };
		div.remove(); // test scaffolding outside any landmark: not part of the page axe checks below
		return out;
	})()`)
	if got["pwned"] != float64(0) {
		t.Errorf("script ran: __pwned = %v", got["pwned"])
	}
	for _, bad := range []string{"script", "img", "iframe", "svg", "b"} {
		for _, tag := range strings.Split(got["tags"].(string), ",") {
			if tag == bad {
				t.Errorf("rendered a <%s> element; tags = %v", bad, got["tags"])
			}
		}
	}
	if a := got["attrs"].(string); strings.Contains(a, "on") && strings.Contains(a, "onerror") {
		t.Errorf("rendered event handler attributes: %s", a)
	}
	if l := got["links"].(string); strings.Contains(l, "javascript:") {
		t.Errorf("rendered javascript: link: %s", l)
	}
	if txt := got["text"].(string); !strings.Contains(txt, "<img src=x onerror=") || !strings.Contains(txt, "<script>") {
		t.Errorf("hostile HTML should appear as text; got %q", txt)
	}
	if tags := got["tags"].(string); !strings.Contains(tags, "strong") || !strings.Contains(tags, "h3") || !strings.Contains(tags, "pre") {
		t.Errorf("Markdown was not rendered; tags = %s", tags)
	}
	// Rendered Markdown with highlighted code, in both colour schemes.
	code, _ := json.Marshal("Some code:\n\n```go\nfunc main() {\n\t// a comment\n\tfmt.Println(\"hi\", 42, true)\n}\n```\n\n```js\nconst x = 'str'; // note\n```\n")
	eval[bool](b, `(async () => {
		const { renderMarkdown } = await import("/static/md.js");
		const div = document.createElement("div");
		div.className = "text";
		div.append(renderMarkdown(`+string(code)+`));
		document.querySelector("main").append(div);
		return true;
	})()`)
	for _, scheme := range []string{"light", "dark"} {
		b.colorScheme(scheme)
		b.axe("highlighted code, " + scheme)
	}

	// Property check over generated inputs (a seeded PRNG, so a failure
	// reproduces): whatever the text, only the allowed elements and
	// attributes come out, links are http(s)/mailto, and all text survives.
	bad := eval[[]string](b, `(async () => {
		const { renderMarkdown } = await import("/static/md.js");
		const tags = new Set(["P","BR","H3","H4","H5","H6","PRE","CODE","STRONG","EM","DEL","A","UL","OL","LI","BLOCKQUOTE","HR","SPAN"]);
		const attrs = { A: ["href","rel","target"], CODE: ["data-lang"], OL: ["start"], SPAN: ["class"] };
		const parts = ["<img src=x onerror=alert(1)>", "<script>", "</script>", "javascript:", "[a](", ")", "](", "**", "*", "_", "__",
			"~~", "`+"`"+`", "`+"```"+`", "`+"```go\\n"+`", "\"str", "// c", "# c", "\n", "\n\n", "# ", "> ", "- ", "1. ", "http://x.y/", "<a href=", "\"", "'", "&amp;", "&#60;",
			"<svg onload=alert(1)>", "data:text/html,", "!", "[", "]", "(", "\\", "  ", "x", "word ", "<", ">", "---"];
		let seed = 42;
		const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
		const out = [];
		window.pwned = 0;
		for (let i = 0; i < 3000 && out.length < 5; i++) {
			let src = "";
			for (let k = rnd(24); k >= 0; k--) src += parts[rnd(parts.length)];
			const div = document.createElement("div");
			div.append(renderMarkdown(src));
			for (const el of div.querySelectorAll("*")) {
				if (!tags.has(el.tagName)) { out.push("tag " + el.tagName + " from " + JSON.stringify(src)); break; }
				for (const a of el.attributes) {
					if (!(attrs[el.tagName] || []).includes(a.name)) { out.push("attr " + a.name + " from " + JSON.stringify(src)); break; }
				}
				if (el.tagName === "A" && !/^(https?:|mailto:)/i.test(el.getAttribute("href"))) out.push("href " + el.getAttribute("href") + " from " + JSON.stringify(src));
			}
			const letters = (s) => s.replace(/[^a-z0-9]/gi, "");
			for (const w of ["img", "script", "onerror", "svg", "onload"]) {
				if (src.includes(w) && !div.textContent.includes(w) && ![...div.querySelectorAll("a")].some(a => a.href.includes(w))) {
					out.push("lost text " + w + " from " + JSON.stringify(src));
				}
			}
		}
		await new Promise(r => setTimeout(r, 20));
		if (window.pwned) out.push("script ran");
		return out;
	})()`)
	for _, p := range bad {
		t.Errorf("renderMarkdown: %s", p)
	}
	b.checkProblems()
}

// TestColorSchemes checks that the UI follows prefers-color-scheme: a light
// page by default and a dark one when the system asks for it, with readable
// contrast in both.
func TestColorSchemes(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.open("/static/modal-sandbox-ui.html")
	b.waitJS("app loaded", `!!document.querySelector('form[aria-label="Log in"]')`)
	if vis := eval[bool](b, `!!document.getElementById("logout").offsetParent || !!document.getElementById("nav").offsetParent`); vis {
		t.Errorf("navigation and log-out are visible before logging in")
	}
	// luminance of the body's background and text colours (0 black … 1 white).
	const lum = `(() => {
		const l = (c) => { const [r, g, b] = c.match(/\d+(\.\d+)?/g).map(Number); return (0.2126*r + 0.7152*g + 0.0722*b) / 255; };
		const cs = getComputedStyle(document.body);
		return [l(cs.backgroundColor), l(cs.color)];
	})()`
	for _, tc := range []struct {
		scheme string
		dark   bool
	}{{"light", false}, {"dark", true}} {
		b.colorScheme(tc.scheme)
		b.shot("login-" + tc.scheme)
		got := eval[[]float64](b, lum)
		bg, fg := got[0], got[1]
		if tc.dark != (bg < 0.5) {
			t.Errorf("%s: background luminance %.2f", tc.scheme, bg)
		}
		if d := bg - fg; d < 0.5 && d > -0.5 {
			t.Errorf("%s: low contrast: background %.2f, text %.2f", tc.scheme, bg, fg)
		}
	}
	b.checkProblems()
}
