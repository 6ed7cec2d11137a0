package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/techbossai/techboss/client"
	"github.com/techbossai/techboss/internal/auth"
	"github.com/techbossai/techboss/internal/httpapi"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/sandbox/local"
	"github.com/techbossai/techboss/internal/sandbox/sandboxtest"
	"github.com/techbossai/techboss/internal/store/storetest"
)

// TestClientPorts: a python3 http.server in a sandbox without network is
// listed, fetched through its preview URL with the token, and through a
// share link by a client with no credentials until the link is revoked.
func TestClientPorts(t *testing.T) {
	sandboxtest.RequireLocal(t)
	bin := filepath.Join(t.TempDir(), "techboss-sandbox-init")
	if err := sandboxtest.BuildInit(bin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db := storetest.OpenSQLite(t)
	drv, err := local.New(local.Options{DataDir: t.TempDir(), InitBinary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	m, err := sandbox.NewManager(sandbox.Deps{Repo: db, Drivers: map[string]sandbox.Driver{"local": drv}, DefaultDriver: "local", Limits: sandbox.DefaultLimits(), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	links, err := sandbox.NewPreviewLinks(m, db, bytes.Repeat([]byte{1}, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := auth.New(auth.Options{Store: db, Hash: auth.TestHashParams})
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Store: db, Auth: svc, Sandboxes: m, PreviewLinks: links}))
	t.Cleanup(srv.Close)
	u, err := svc.CreateUser(ctx, "dev@example.com", "dev-password-1", auth.RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := svc.CreateToken(ctx, u.ID, "t")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.URL, client.WithToken(string(tok)))
	if err != nil {
		t.Fatal(err)
	}
	created, err := c.CreateSandbox(ctx, client.SandboxSpec{})
	if err != nil {
		t.Fatal(err)
	}
	id := created.SandboxID
	t.Cleanup(func() { _ = drv.Destroy(context.Background(), sandbox.Ref(id)) })
	if _, err := c.WriteFile(ctx, id, "index.html", strings.NewReader("<h1>hi</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := c.Exec(ctx, id, client.ExecRequest{Command: []string{"sh", "-c", `(python3 -m http.server 9000 >/dev/null 2>&1 &)
for i in $(seq 200); do python3 -c 'import socket; socket.create_connection(("127.0.0.1", 9000))' 2>/dev/null && exit 0; sleep 0.05; done; exit 1`}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("start http.server: %+v %v", res, err)
	}

	ports, err := c.Ports(ctx, id)
	if err != nil || len(ports) != 1 || ports[0].Port != 9000 || ports[0].PreviewURL != "/sandbox/"+id+"/ports/9000/" {
		t.Fatalf("Ports = %+v, %v", ports, err)
	}
	get := func(hc *http.Client, u string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if st, body := get(http.DefaultClient, c.PreviewURL(id, 9000)+"index.html", "Authorization", "Bearer "+string(tok)); st != 200 || body != "<h1>hi</h1>" {
		t.Fatalf("preview with the token: %d %q", st, body)
	}

	link, err := c.CreatePreviewLink(ctx, id, 9000, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link.URL, srv.URL+"/sandbox/"+id+"/ports/9000/?") {
		t.Fatalf("link URL %q", link.URL)
	}
	jar, _ := cookiejar.New(nil)
	anon := &http.Client{Jar: jar}
	if st, body := get(anon, link.URL); st != 200 || body != "<h1>hi</h1>" {
		t.Fatalf("share link: %d %q", st, body)
	}
	if st, _ := get(anon, c.PreviewURL(id, 9000)+"index.html"); st != 200 {
		t.Fatalf("share link's cookie: %d", st)
	}
	ls, err := c.PreviewLinks(ctx, id, 9000)
	if err != nil || len(ls) != 1 || ls[0].LinkID != link.LinkID {
		t.Fatalf("PreviewLinks = %+v, %v", ls, err)
	}
	if err := c.RevokePreviewLink(ctx, id, 9000, link.LinkID); err != nil {
		t.Fatal(err)
	}
	if st, _ := get(anon, c.PreviewURL(id, 9000)+"index.html"); st != 404 {
		t.Fatalf("revoked link: %d, want 404", st)
	}
	var ce *client.Error
	if err := c.RevokePreviewLink(ctx, id, 9000, link.LinkID); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Fatalf("second revoke: %v", err)
	}
}
