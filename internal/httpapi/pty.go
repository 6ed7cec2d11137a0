package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/presence"
	"github.com/techbossai/techboss/internal/sandbox"
	"github.com/techbossai/techboss/internal/teams"
)

// ptyOps documents the terminal routes.
var ptyOps = []apiOp{
	{Method: "GET", Path: "/sandbox/{id}/pty", Summary: "Terminal: upgrades to a WebSocket (?cols=80&rows=24; ?session_id=pty_… re-attaches and replays the scrollback). " +
		"Server → client: a text frame {\"type\":\"session\",\"session_id\"}, binary frames of output, finally {\"type\":\"exit\",\"exit_code\"}. " +
		"Client → server: binary frames are keystrokes, text frames {\"type\":\"resize\",\"cols\",\"rows\"}. With read access (a viewer) only ?session_id= of an open session, to follow it: input is ignored (an error frame says so). See docs/interactive.md", Errors: []int{400, 403, 409, 429, 501}},
	{Method: "GET", Path: "/sandbox/{id}/pty/sessions", Summary: "The sandbox's terminal sessions", Response: ptySessionsResponse{}, Errors: []int{501}},
	{Method: "DELETE", Path: "/sandbox/{id}/pty/sessions/{session_id}", Summary: "End a terminal session and what it started", Errors: []int{501}},
}

func (s *server) mountPTY(r chi.Router) {
	r.Get("/sandbox/{id}/pty", s.api(s.handlePTY))
	r.Get("/sandbox/{id}/pty/sessions", s.api(s.handleListPTY))
	r.Delete("/sandbox/{id}/pty/sessions/{session_id}", s.api(s.handleClosePTY))
}

type ptySessionsResponse struct {
	Sessions []sandbox.PTYSession `json:"sessions"`
}

// ptyControl is a text frame either way on the terminal WebSocket.
type ptyControl struct {
	Type      string `json:"type"`                 // session | exit | error (server); resize (client)
	SessionID string `json:"session_id,omitempty"` // session
	ExitCode  *int   `json:"exit_code,omitempty"`  // exit
	Message   string `json:"message,omitempty"`    // error
	Cols      int    `json:"cols,omitempty"`       // resize
	Rows      int    `json:"rows,omitempty"`       // resize
}

// ptyReadLimit bounds one client frame (a paste).
const ptyReadLimit = 1 << 20

func ptyRequestOf(r *http.Request) (sandbox.PTYRequest, error) {
	q := r.URL.Query()
	req := sandbox.PTYRequest{SessionID: q.Get("session_id"), Cols: 80, Rows: 24}
	var bad []errs.FieldError
	for _, f := range []struct {
		name string
		p    *uint16
	}{{"cols", &req.Cols}, {"rows", &req.Rows}} {
		v := q.Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > sandbox.MaxPTYSize {
			bad = append(bad, errs.FieldError{Field: f.name, Reason: "must be an integer from 1 to 1000"})
			continue
		}
		*f.p = uint16(n)
	}
	if len(bad) > 0 {
		return req, errs.Fields(bad)
	}
	return req, sandbox.CheckPTYRequest(req)
}

func (s *server) handlePTY(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	req, err := ptyRequestOf(r)
	if err != nil {
		return err
	}
	if r.Header.Get("Authorization") == "" {
		// Cookie-authenticated: a browser attaches the cookie to a
		// WebSocket from any page, so the upgrade must pass the same
		// cross-origin check as a cookie write (trusted origins included).
		probe := r.Clone(r.Context())
		probe.Method = http.MethodPost
		if err := s.checkOrigin(probe); err != nil {
			return err
		}
	}
	id := chi.URLParam(r, "id")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		if _, _, err := m.Running(r.Context(), sandboxOwner(r), id); err != nil {
			return err // someone else's sandbox stays a 404
		}
		return errs.E(errs.Malformed, "this route upgrades to a WebSocket (Upgrade: websocket)")
	}
	// Read access follows a terminal someone opened, and types nothing.
	viewOnly := accessOf(r) != nil && accessOf(r).Access < teams.Operate
	if viewOnly && req.SessionID == "" {
		return errs.E(errs.Forbidden, "with read access you can only follow an open terminal: pass its session_id")
	}
	p, err := m.AttachPTY(r.Context(), sandboxOwner(r), id, req)
	if err != nil {
		return err
	}
	// The origin was checked above for cookie requests; bearer requests
	// never come from a browser page's ambient credentials.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		_ = p.Close()
		return nil // Accept answered
	}
	s.streams.add()
	defer s.streams.done()
	defer s.watching(r, id, presence.KindPTY, "")()
	// Revoked access (authz.go) cancels the request's context: close.
	defer context.AfterFunc(r.Context(), func() { _ = c.Close(websocket.StatusPolicyViolation, "access revoked") })()
	s.serveTerminal(c, p, viewOnly)
	return nil
}

// serveTerminal relays between the WebSocket and the terminal until the
// session ends, either side leaves, or the server stops. The session itself
// outlives all three but its end.
func (s *server) serveTerminal(c *websocket.Conn, p sandbox.PTY, viewOnly bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if s.deps.Stopping != nil {
		stop := context.AfterFunc(s.deps.Stopping, func() {
			_ = c.Close(websocket.StatusGoingAway, "server restarting: attach again with session_id")
			cancel()
		})
		defer stop()
	}
	c.SetReadLimit(ptyReadLimit)
	send := func(v ptyControl) error {
		b, _ := json.Marshal(v)
		wctx, wcancel := context.WithTimeout(ctx, streamWriteTimeout)
		defer wcancel()
		return c.Write(wctx, websocket.MessageText, b)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // terminal -> client
		defer wg.Done()
		defer cancel()
		if err := send(ptyControl{Type: "session", SessionID: p.SessionID()}); err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := p.Read(buf)
			if n > 0 {
				wctx, wcancel := context.WithTimeout(ctx, streamWriteTimeout)
				werr := c.Write(wctx, websocket.MessageBinary, buf[:n])
				wcancel()
				if werr != nil {
					return
				}
			}
			switch {
			case err == nil:
				continue
			case errors.Is(err, io.EOF):
				code := p.ExitCode()
				if send(ptyControl{Type: "exit", ExitCode: &code}) == nil {
					_ = c.Close(websocket.StatusNormalClosure, "")
				}
			case errors.Is(err, sandbox.ErrPTYLagged):
				_ = c.Close(websocket.StatusTryAgainLater, "fell behind the output: attach again with session_id")
			default:
				s.log.Debug("terminal ended", "session_id", p.SessionID(), "err", err)
				_ = c.Close(websocket.StatusGoingAway, "the sandbox stopped")
			}
			return
		}
	}()
	go func() { // client -> terminal
		defer wg.Done()
		defer cancel()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if viewOnly {
				_ = send(ptyControl{Type: "error", Message: "read-only: you follow this terminal (viewer access); keystrokes and resizes are ignored"})
				continue
			}
			if typ == websocket.MessageBinary {
				if _, err := p.Write(b); err != nil {
					return
				}
				continue
			}
			var ctl ptyControl
			if json.Unmarshal(b, &ctl) != nil || ctl.Type != "resize" {
				_ = send(ptyControl{Type: "error", Message: `text frames are control messages: {"type":"resize","cols":C,"rows":R}`})
				continue
			}
			if ctl.Cols < 1 || ctl.Rows < 1 || ctl.Cols > sandbox.MaxPTYSize || ctl.Rows > sandbox.MaxPTYSize {
				_ = send(ptyControl{Type: "error", Message: "resize: cols and rows must be integers from 1 to 1000"})
				continue
			}
			if err := p.Resize(uint16(ctl.Cols), uint16(ctl.Rows)); err != nil {
				return
			}
		}
	}()
	<-ctx.Done()
	// Detach: unblocks the terminal reader; the session goes on.
	_ = p.Close()
	wg.Wait()
	_ = c.CloseNow()
}

func (s *server) handleListPTY(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	list, err := m.ListPTY(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, ptySessionsResponse{Sessions: list})
}

func (s *server) handleClosePTY(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	if err := m.ClosePTY(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"), chi.URLParam(r, "session_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
