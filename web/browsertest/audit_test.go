package browsertest

import (
	"context"
	"regexp"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/techbossai/techboss/internal/auth"
)

// TestAuditView: an admin finds the Audit link, sees rows of their own
// actions (their login, the API tokens they made) with actor, action,
// resource, result and IP; the action filter narrows the table and the
// Export link; "Load more" pages with the cursor. A member sees no Audit
// link, and the page opened by hand says it is refused. At 1440×900 and
// 390×844.
func TestAuditView(t *testing.T) { forViewports(t, testAuditView) }

func testAuditView(t *testing.T, vp viewport) {
	s := newStack(t)
	requireRoutes(t, s, "GET /audit", "GET /audit/export")
	const adminEmail, adminPass = "root@example.com", "an admin's long passphrase"
	if _, err := s.auth.CreateUser(context.Background(), adminEmail, auth.Secret(adminPass), auth.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	s.user(t, bobEmail, bobPass)
	b := newBrowser(t, s.url)
	b.allow(`^http: GET .*/auth/me -> 401$`)
	b.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	b.allow(`^http: GET .*/sandbox\?limit=\d+ -> 503$`)
	b.open("/")
	b.login(adminEmail, adminPass)
	// 50 API tokens: with the login, more than one page (50) of entries.
	if n := eval[int](b, `(async () => { let n = 0; for (let i = 0; i < 50; i++) { const r = await fetch("/auth/tokens", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "t" + i})}); if (r.ok) n++; } return n; })()`); n != 50 {
		t.Fatalf("made %d tokens, want 50", n)
	}
	b.waitJS("Audit link shown", `!document.querySelector('#nav a[data-nav="audit"]').hidden`)
	b.do("open Audit", chromedp.Click(chromedp.CSS(`#nav a[data-nav="audit"]`)))
	b.waitJS("a first page of rows", `document.querySelectorAll("main tbody tr[data-audit]").length === 50 && !document.querySelector("main button:not([type=submit])").hidden`)
	row := `[...document.querySelectorAll("main tbody tr[data-audit]")].map((r) => [...r.cells].map((c) => c.textContent).join("|"))`
	if first := eval[string](b, row+`[0]`); !regexpMatch(`^[^|]+\|`+adminEmail+`\|token\.create\|token:[^|]+\|20[01]\|127\.0\.0\.1$`, first) {
		t.Errorf("newest row = %q, want the admin's token.create (201, 127.0.0.1)", first)
	}
	b.checkA11y("audit, first page")
	b.shot("audit-" + vp.name)
	b.clickButton("Load more")
	b.waitJS("the next page, down to the login", `(() => { const l = `+row+`; return l.length >= 51 && l.some((r) => r.includes("|login|")) && document.querySelector("main button:not([type=submit])").hidden; })()`)

	// Filter by action: only logins; the export follows the filter.
	b.fillByLabel("Action", "login")
	b.clickButton("Filter")
	b.waitJS("only the login", `(() => { const l = `+row+`; return l.length === 1 && l[0].includes("|`+adminEmail+`|login|"); })()`)
	if href := eval[string](b, `[...document.querySelectorAll("main a")].find((a) => a.textContent.startsWith("Export")).getAttribute("href")`); href != "/audit/export?action=login" {
		t.Errorf("export link = %q", href)
	}
	if lines := eval[string](b, `fetch("/audit/export?action=login").then((r) => r.text())`); len(lines) == 0 || !regexpMatch(`"action":"login"`, lines) {
		t.Errorf("export answered %q", lines)
	}
	b.checkA11y("audit, filtered")
	b.checkProblems()

	// A member: no link; the page by hand is refused, said on the page.
	bob := newBrowser(t, s.url)
	bob.allow(`^http: GET .*/auth/me -> 401$`)
	bob.allow(`^http: GET .*/usage\?group_by=sandbox.* -> 503$`)
	bob.allow(`^http: GET .*/sandbox\?limit=\d+ -> 503$`)
	bob.allow(`^http: GET .*/audit\?limit=50 -> 403$`)
	bob.open("/")
	bob.login(bobEmail, bobPass)
	bob.waitJS("nav shown", `!document.getElementById("nav").hidden`)
	if shown := eval[bool](bob, `!document.querySelector('#nav a[data-nav="audit"]').hidden`); shown {
		t.Error("a member sees the Audit link")
	}
	bob.open("/#/audit")
	bob.waitJS("refused", `(document.querySelector("main .error")?.textContent || "").trim() !== "" && !document.querySelector("main tbody tr[data-audit]")`)
	bob.checkA11y("audit, refused")
	bob.checkProblems()
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
