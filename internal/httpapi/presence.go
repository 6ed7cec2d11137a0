package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/presence"
)

// presenceOps documents who watches a sandbox.
var presenceOps = []apiOp{
	{Method: "GET", Path: "/sandbox/{id}/presence", Summary: "Who is watching the sandbox right now: one entry per user with an open stream of it (a run's events, a terminal, a process's logs, file watching), since when, how many streams, of which kinds, following which runs. Run event streams (typed form) get a `presence` event with the same list when someone joins or leaves (debounced). With several replicas on one PostgreSQL database the list covers the streams every replica serves (a user watching through two is one entry)", Response: presenceResponse{}},
}

type presenceResponse struct {
	Viewers []presence.Viewer `json:"viewers"`
}

func (s *server) mountPresence(r chi.Router) {
	r.Get("/sandbox/{id}/presence", s.api(s.handlePresence))
}

func (s *server) handlePresence(w http.ResponseWriter, r *http.Request) error {
	m, err := s.sandboxes()
	if err != nil {
		return err
	}
	sb, err := m.Get(r.Context(), sandboxOwner(r), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, presenceResponse{Viewers: s.presence.ViewersNow(r.Context(), sb.ID)})
}

// watching records r's user as watching sandboxID through a stream of kind
// until the returned release is called. Call it only once access to the
// sandbox is established (a stranger's attempt is no presence).
func (s *server) watching(r *http.Request, sandboxID, kind, runID string) (release func()) {
	u := currentUser(r)
	return s.presence.Join(sandboxID, presence.Stream{UserID: u.ID, Email: u.Email, Kind: kind, RunID: runID})
}
