package httpapi

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/teams"
)

// accessRule is what one authenticated route needs. A sandbox route names
// the access it needs (Need) and how its {id} reaches the sandbox (Via);
// a route authorize resolves no sandbox for says why instead (Skip). Stream routes
// are long-lived: revoking the caller's access ends them at once.
type accessRule struct {
	Need   teams.Access
	Via    string // "sandbox" (default): {id} is the sandbox; "run": a run of it; "snapshot": a snapshot of it
	Stream bool
	Skip   string
}

var (
	read    = accessRule{Need: teams.Read}
	operate = accessRule{Need: teams.Operate}
	admin   = accessRule{Need: teams.Admin}
)

func skip(why string) accessRule { return accessRule{Skip: why} }

func (a accessRule) via(v string) accessRule { a.Via = v; return a }
func (a accessRule) stream() accessRule      { a.Stream = true; return a }

// accessRules lists every authenticated route ("METHOD pattern"): the one
// table authorize consults. TestAccessMatrix walks the router and fails
// for a route missing here, and authorize refuses such a route (500).
var accessRules = map[string]accessRule{
	"GET /auth/me":                                  skip("the caller's own account"),
	"GET /auth/tokens":                              skip("the caller's own tokens"),
	"POST /auth/tokens":                             skip("the caller's own tokens"),
	"DELETE /auth/tokens/{id}":                      skip("the caller's own tokens"),
	"POST /auth/users":                              skip("admins only (checked by the handler)"),
	"GET /auth/users/{id}":                          skip("admins only (checked by the handler)"),
	"POST /sandbox":                                 skip("creates in the caller's scope (X-Team checked by the handler)"),
	"GET /sandbox":                                  skip("lists the caller's scope (X-Team checked by the handler)"),
	"GET /volumes":                                  skip("the caller's own volumes (X-Team checked by the handler)"),
	"DELETE /volumes/{name}":                        skip("the caller's own volumes (X-Team checked by the handler)"),
	"GET /secrets":                                  skip("the caller's own secrets"),
	"PUT /secrets/{name}":                           skip("the caller's own secrets"),
	"DELETE /secrets/{name}":                        skip("the caller's own secrets"),
	"GET /webhooks":                                 skip("the caller's own webhooks"),
	"POST /webhooks":                                skip("the caller's own webhooks"),
	"DELETE /webhooks/{id}":                         skip("the caller's own webhooks"),
	"POST /webhooks/{id}/test":                      skip("the caller's own webhooks"),
	"GET /webhooks/{id}/deliveries":                 skip("the caller's own webhooks"),
	"GET /audit":                                    skip("admins only (checked by the handler)"),
	"GET /audit/export":                             skip("admins only (checked by the handler)"),
	"GET /usage":                                    skip("the caller's own usage"),
	"GET /v1/budget":                                skip("the caller's own budget"),
	"PUT /v1/budgets/{user_id}":                     skip("admins only (checked by the handler)"),
	"DELETE /v1/budgets/{user_id}":                  skip("admins only (checked by the handler)"),
	"GET /v1/models":                                skip("the model list"),
	"POST /v1/chat":                                 skip("the caller's own model calls"),
	"GET /debug/pprof/*":                            skip("admins only (checked by the middleware)"),
	"POST /teams":                                   skip("creates a team the caller owns"),
	"GET /teams":                                    skip("the caller's teams"),
	"GET /teams/{team}":                             skip("team routes check the caller's team role (teams.Service)"),
	"DELETE /teams/{team}":                          skip("checked by the handler: team owners (teams.Service role) or admins"),
	"GET /teams/{team}/members":                     skip("team routes check the caller's team role"),
	"POST /teams/{team}/members":                    skip("team routes check the caller's team role"),
	"PUT /teams/{team}/members/{user}":              skip("team routes check the caller's team role"),
	"DELETE /teams/{team}/members/{user}":           skip("team routes check the caller's team role"),
	"POST /teams/{team}/invitations":                skip("team routes check the caller's team role"),
	"GET /teams/{team}/invitations":                 skip("team routes check the caller's team role"),
	"DELETE /teams/{team}/invitations/{invitation}": skip("team routes check the caller's team role"),
	"GET /teams/{team}/budget":                      skip("checked by the handler: any team member (teams.Service role) or admins"),
	"PUT /teams/{team}/budget":                      skip("checked by the handler: team owners (teams.Service role) or admins"),
	"DELETE /teams/{team}/budget":                   skip("checked by the handler: team owners (teams.Service role) or admins"),
	"GET /teams/{team}/secrets":                     skip("checked by the handler: team owners and members (teams.Service role)"),
	"GET /teams/{team}/secrets/{name}":              skip("checked by the handler: team owners and members (teams.Service role)"),
	"PUT /teams/{team}/secrets/{name}":              skip("checked by the handler: team owners (teams.Service role)"),
	"DELETE /teams/{team}/secrets/{name}":           skip("checked by the handler: team owners (teams.Service role)"),
	"POST /invitations/{token}/accept":              skip("the token is the permission; checked by teams.Service"),
	// The preview proxy authenticates itself (share links, owner passes)
	// and asks resolveAccess for the user behind a session, token or pass.
	"GET /sandbox/{id}/ports/{port}/*":     skip("the preview proxy: previewTarget asks resolveAccess"),
	"HEAD /sandbox/{id}/ports/{port}/*":    skip("the preview proxy: previewTarget asks resolveAccess"),
	"POST /sandbox/{id}/ports/{port}/*":    skip("the preview proxy: previewTarget asks resolveAccess"),
	"PUT /sandbox/{id}/ports/{port}/*":     skip("the preview proxy: previewTarget asks resolveAccess"),
	"PATCH /sandbox/{id}/ports/{port}/*":   skip("the preview proxy: previewTarget asks resolveAccess"),
	"DELETE /sandbox/{id}/ports/{port}/*":  skip("the preview proxy: previewTarget asks resolveAccess"),
	"OPTIONS /sandbox/{id}/ports/{port}/*": skip("the preview proxy: previewTarget asks resolveAccess"),

	"GET /sandbox/{id}":                                 read,
	"DELETE /sandbox/{id}":                              admin,
	"GET /sandbox/{id}/logs":                            read.stream(),
	"POST /sandbox/{id}/exec":                           operate.stream(),
	"GET /sandbox/{id}/files":                           read,
	"GET /sandbox/{id}/files/*":                         read,
	"PUT /sandbox/{id}/files/*":                         operate,
	"DELETE /sandbox/{id}/files/*":                      operate,
	"GET /sandbox/{id}/archive":                         read,
	"PUT /sandbox/{id}/archive":                         operate,
	"POST /sandbox/{id}/claude":                         operate.stream(),
	"GET /sandbox/{id}/runs":                            read,
	"GET /runs/{id}":                                    read.via("run"),
	"GET /runs/{id}/events":                             read.via("run").stream(),
	"POST /runs/{id}/cancel":                            operate.via("run"),
	"POST /runs/{id}/permissions/{request_id}":          operate.via("run"),
	"GET /sandbox/{id}/snapshots":                       read,
	"POST /sandbox/{id}/snapshots":                      operate,
	"POST /sandbox/{id}/restore":                        operate,
	"GET /snapshots/{id}":                               read.via("snapshot"),
	"GET /snapshots/{id}/diff/{other}":                  read.via("snapshot"),
	"GET /snapshots/{id}/file":                          read.via("snapshot"),
	"GET /sandbox/{id}/git/status":                      read,
	"POST /sandbox/{id}/git/commit":                     operate,
	"POST /sandbox/{id}/git/push":                       operate,
	"POST /sandbox/{id}/git/pull-request":               operate,
	"GET /sandbox/{id}/ports":                           read,
	"POST /sandbox/{id}/ports/{port}/links":             admin, // a link shares the app with anyone holding it
	"GET /sandbox/{id}/ports/{port}/links":              read,
	"DELETE /sandbox/{id}/ports/{port}/links/{link_id}": admin,
	"GET /sandbox/{id}/pty":                             read.stream(), // a viewer follows an open session, read-only (pty.go)
	"GET /sandbox/{id}/pty/sessions":                    read,
	"DELETE /sandbox/{id}/pty/sessions/{session_id}":    operate,
	"POST /sandbox/{id}/processes":                      operate,
	"GET /sandbox/{id}/processes":                       read,
	"GET /sandbox/{id}/processes/{pid}/logs":            read.stream(),
	"POST /sandbox/{id}/processes/{pid}/stdin":          operate,
	"POST /sandbox/{id}/processes/{pid}/signal":         operate,
	"GET /sandbox/{id}/watch":                           read.stream(),
	"GET /sandbox/{id}/presence":                        read,
	"GET /sandbox/{id}/shares":                          read,
	"POST /sandbox/{id}/shares":                         admin,
	"DELETE /sandbox/{id}/shares/{share}":               admin,
}

// sandboxAccess is what authorize resolved for a sandbox route.
type sandboxAccess struct {
	SandboxID, OwnerID, TeamID string
	Access                     teams.Access
}

type sandboxAccessKey struct{}

// accessOf is the caller's resolved access on this request's sandbox, or
// nil on a route about no one sandbox.
func accessOf(r *http.Request) *sandboxAccess {
	a, _ := r.Context().Value(sandboxAccessKey{}).(*sandboxAccess)
	return a
}

// sandboxOwner is the user ID the domain services are called with: the
// sandbox's owner once authorize let the caller in (a team member or a
// share acts on the owner's sandbox), else the caller.
func sandboxOwner(r *http.Request) string {
	if a := accessOf(r); a != nil {
		return a.OwnerID
	}
	return currentUser(r).ID
}

// accessHeader tells the client its access on the sandbox (read, operate,
// admin), so a UI can hide what it may not do.
const accessHeader = "X-Techboss-Access"

// authorize is the one gate every authenticated route passes: it finds the
// route's rule, resolves the sandbox the route is about, asks teams.Access
// what the caller may do with it, and refuses with 404 (no access: whether
// the sandbox exists does not leak) or 403 (some access, not enough).
func (s *server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + routePattern(r)
		rule, ok := accessRules[key]
		if !ok {
			s.writeError(w, r, errors.New("route "+key+" has no access rule"))
			return
		}
		if rule.Skip != "" {
			next.ServeHTTP(w, r)
			return
		}
		a, err := s.resolveAccess(r.Context(), currentUser(r).ID, rule.Via, chi.URLParam(r, "id"))
		if err == nil && a.Access < rule.Need {
			err = errs.E(errs.Forbidden, "this needs %s access to the sandbox (yours: %s)", rule.Need, a.Access)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.Header().Set(accessHeader, a.Access.String())
		ctx := context.WithValue(r.Context(), sandboxAccessKey{}, a)
		if rule.Stream && a.Access != teams.Admin {
			// The owner's access cannot be revoked; anyone else's stream
			// ends when a share or membership that let them in goes.
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
			defer s.live.add(a.SandboxID, currentUser(r).ID, rule.Need, cancel)()
			// A revoke on this replica ends the stream at once
			// (recheckStreams); one on another replica, at this check.
			go s.watchAccess(ctx, cancel, currentUser(r).ID, a.SandboxID, rule.Need)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// resolveAccess finds the sandbox id names (through a run or snapshot when
// via says so) and the user's access to it. No access is the same 404 as
// a sandbox that does not exist.
func (s *server) resolveAccess(ctx context.Context, userID, via, id string) (*sandboxAccess, error) {
	db := s.deps.Store
	if db == nil {
		return nil, errs.E(errs.Unavailable, "the database is not configured on this server")
	}
	notFound := errs.E(errs.NotFound, "sandbox not found")
	sandboxID := id
	switch via {
	case "run":
		notFound = errs.E(errs.NotFound, "run not found")
		run, err := db.GetRun(ctx, id)
		if errs.KindOf(err) == errs.NotFound {
			return nil, notFound
		}
		if err != nil {
			return nil, err
		}
		sandboxID = run.SandboxID
	case "snapshot":
		notFound = errs.Wrap(errs.NotFound, errs.ErrNotFound, "snapshot not found")
		rec, err := db.GetSnapshot(ctx, id)
		if errs.KindOf(err) == errs.NotFound {
			return nil, notFound
		}
		if err != nil {
			return nil, err
		}
		sandboxID = rec.SandboxID
	}
	sb, err := db.GetSandbox(ctx, sandboxID)
	if errs.KindOf(err) == errs.NotFound {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	level, err := s.teams.Access(ctx, userID, teams.SandboxRef{ID: sb.ID, OwnerID: sb.OwnerID, TeamID: sb.TeamID})
	if err != nil {
		return nil, err
	}
	if level == teams.None {
		return nil, notFound
	}
	return &sandboxAccess{SandboxID: sb.ID, OwnerID: sb.OwnerID, TeamID: sb.TeamID, Access: level}, nil
}

// liveStreams are the open streams of users who reach a sandbox through a
// share or a team: revoking that ends them at once on this replica (on
// another, at its streams' next access check: watchAccess).
type liveStreams struct {
	mu   sync.Mutex
	next int
	m    map[liveKey]map[int]liveStream
}

type liveStream struct {
	need   teams.Access
	cancel context.CancelFunc
}

type liveKey struct{ sandboxID, userID string }

// add registers a stream; the returned func unregisters it.
func (l *liveStreams) add(sandboxID, userID string, need teams.Access, cancel context.CancelFunc) func() {
	k := liveKey{sandboxID, userID}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[liveKey]map[int]liveStream{}
	}
	if l.m[k] == nil {
		l.m[k] = map[int]liveStream{}
	}
	l.next++
	n := l.next
	l.m[k][n] = liveStream{need: need, cancel: cancel}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.m[k], n)
		if len(l.m[k]) == 0 {
			delete(l.m, k)
		}
	}
}

// streams lists the registered streams, by key.
func (l *liveStreams) keys() []liveKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]liveKey, 0, len(l.m))
	for k := range l.m {
		out = append(out, k)
	}
	return out
}

// cancel ends k's streams that need more than level.
func (l *liveStreams) cancel(k liveKey, level teams.Access) {
	l.mu.Lock()
	var fs []context.CancelFunc
	for _, st := range l.m[k] {
		if st.need > level {
			fs = append(fs, st.cancel)
		}
	}
	l.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// recheckStreams checks again every open shared stream (of userID, or of
// everyone when userID is ""; of sandboxID, or of every sandbox when "")
// and ends those whose user no longer has the access they need. Called after a
// share is removed or a team membership removed or lowered.
func (s *server) recheckStreams(ctx context.Context, sandboxID, userID string) {
	for _, k := range s.live.keys() {
		if (sandboxID != "" && k.sandboxID != sandboxID) || (userID != "" && k.userID != userID) {
			continue
		}
		a, err := s.resolveAccess(ctx, k.userID, "sandbox", k.sandboxID)
		if err != nil && errs.KindOf(err) != errs.NotFound {
			s.log.WarnContext(ctx, "recheck stream access", "sandbox_id", k.sandboxID, "err", err)
			continue
		}
		level := teams.None
		if err == nil {
			level = a.Access
		}
		s.live.cancel(k, level)
	}
}

// accessRecheck is how often an open stream of a shared user checks that
// its access still stands: how late another replica's revoke ends it.
const accessRecheck = 2 * time.Second

// watchAccess cancels a shared user's stream once the user no longer has
// need on the sandbox, checking every accessRecheck until ctx ends. A
// database that does not answer ends nothing: the check is tried again.
func (s *server) watchAccess(ctx context.Context, cancel context.CancelFunc, userID, sandboxID string, need teams.Access) {
	t := time.NewTicker(accessRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a, err := s.resolveAccess(ctx, userID, "sandbox", sandboxID)
		switch {
		case errs.KindOf(err) == errs.NotFound, err == nil && a.Access < need:
			cancel()
			return
		case err != nil && ctx.Err() == nil:
			s.log.WarnContext(ctx, "recheck stream access", "sandbox_id", sandboxID, "err", err)
		}
	}
}

// previewOwner is the owner of sandbox id when userID may read it (the
// preview proxy's check: a viewer sees the app, a stranger gets 404).
func (s *server) previewOwner(ctx context.Context, userID, id string) (string, error) {
	a, err := s.resolveAccess(ctx, userID, "sandbox", id)
	if err != nil {
		return "", err
	}
	return a.OwnerID, nil
}
