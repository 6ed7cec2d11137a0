package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/webhooks"
)

// webhookOps documents the webhook routes.
var webhookOps = []apiOp{
	{Method: "POST", Path: "/webhooks", Summary: "Create a webhook: the events of your runs, sandboxes and snapshots named in events are POSTed to url, signed with the hook's secret (X-Techboss-Signature: sha256=HMAC-SHA256 of \"<X-Techboss-Timestamp>.<body>\"); the secret is shown only in this response. Events: " + eventList(),
		Request: createWebhookRequest{}, Response: webhooks.Created{}, Errors: []int{409},
		Example: createWebhookRequest{URL: "https://example.com/hooks/techboss", Events: []string{webhooks.RunFinished, webhooks.RunFailed}}},
	{Method: "GET", Path: "/webhooks", Summary: "Your webhooks (never their secrets)", Response: listWebhooksResponse{}},
	{Method: "DELETE", Path: "/webhooks/{id}", Summary: "Delete a webhook and its delivery log; pending deliveries are dropped"},
	{Method: "GET", Path: "/webhooks/{id}/deliveries", Summary: "The hook's newest 100 deliveries: event, state (pending, delivered, failed), attempts, the last response status and error", Response: listDeliveriesResponse{}},
	{Method: "POST", Path: "/webhooks/{id}/test", Summary: "Queue a ping event to the hook (it shows in the delivery log)"},
}

func eventList() string {
	s := ""
	for i, e := range webhooks.Events {
		if i > 0 {
			s += ", "
		}
		s += e
	}
	return s
}

type createWebhookRequest struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
}

type listWebhooksResponse struct {
	Webhooks []webhooks.Hook `json:"webhooks"`
}

type listDeliveriesResponse struct {
	Deliveries []webhooks.Delivery `json:"deliveries"`
}

func (s *server) mountWebhooks(r chi.Router) {
	r.Post("/webhooks", s.api(s.handleCreateWebhook))
	r.Get("/webhooks", s.api(s.handleListWebhooks))
	r.Delete("/webhooks/{id}", s.api(s.handleDeleteWebhook))
	r.Get("/webhooks/{id}/deliveries", s.api(s.handleWebhookDeliveries))
	r.Post("/webhooks/{id}/test", s.api(s.handleTestWebhook))
}

func (s *server) webhooks() (*webhooks.Service, error) {
	if s.deps.Webhooks == nil {
		return nil, errs.E(errs.Unavailable, "webhooks are not configured on this server")
	}
	return s.deps.Webhooks, nil
}

func (s *server) handleCreateWebhook(w http.ResponseWriter, r *http.Request) error {
	wh, err := s.webhooks()
	if err != nil {
		return err
	}
	var req createWebhookRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	c, err := wh.Create(r.Context(), currentUser(r).ID, req.URL, req.Events)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, c)
}

func (s *server) handleListWebhooks(w http.ResponseWriter, r *http.Request) error {
	wh, err := s.webhooks()
	if err != nil {
		return err
	}
	hs, err := wh.List(r.Context(), currentUser(r).ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listWebhooksResponse{Webhooks: hs})
}

func (s *server) handleDeleteWebhook(w http.ResponseWriter, r *http.Request) error {
	wh, err := s.webhooks()
	if err != nil {
		return err
	}
	if err := wh.Delete(r.Context(), currentUser(r).ID, chi.URLParam(r, "id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) handleWebhookDeliveries(w http.ResponseWriter, r *http.Request) error {
	wh, err := s.webhooks()
	if err != nil {
		return err
	}
	ds, err := wh.Deliveries(r.Context(), currentUser(r).ID, chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listDeliveriesResponse{Deliveries: ds})
}

func (s *server) handleTestWebhook(w http.ResponseWriter, r *http.Request) error {
	wh, err := s.webhooks()
	if err != nil {
		return err
	}
	if err := wh.Test(r.Context(), currentUser(r).ID, chi.URLParam(r, "id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
