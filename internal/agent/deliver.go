package agent

import (
	"context"
	"log/slog"
	"regexp"
	"strings"

	"github.com/techbossai/techboss/internal/errs"
	"github.com/techbossai/techboss/internal/sandbox"
)

// Deliver is a run's deliver option: when the run succeeds its changes are
// committed on Branch, pushed (through the credential broker, which holds
// the branch to the repository's push prefix) and, with PullRequest, a
// pull request is opened whose body links the run's transcript.
type Deliver struct {
	// Branch is the branch to commit on and push (e.g. "agent/fix-login").
	Branch string `json:"branch"`
	// PullRequest opens a pull (GitHub) or merge (GitLab) request.
	PullRequest bool `json:"pull_request,omitempty"`
	// Repo is the repository's directory under /workspace ("" = the
	// sandbox's first repository).
	Repo string `json:"repo,omitempty"`
	// Title is the pull request's title and the commit's subject
	// (default: the prompt's first line).
	Title string `json:"title,omitempty"`
	// Base is the branch the pull request targets (default: the
	// remote's default branch).
	Base string `json:"base,omitempty"`
}

// DeliveryData is the data of a TypeDelivery event.
type DeliveryData struct {
	Branch         string `json:"branch"`
	Commit         string `json:"commit,omitempty"`
	PullRequestURL string `json:"pull_request_url,omitempty"`
	NothingChanged bool   `json:"nothing_changed,omitempty"`
	Error          string `json:"error,omitempty"`
}

// DeliverFunc carries out a succeeded run's deliver option. The returned
// data is recorded as the run's delivery event; a public error's text is
// too.
type DeliverFunc func(ctx context.Context, r Run) (DeliveryData, error)

var deliverBranchRE = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,200}$`)

func (s *Service) validateDeliver(d *Deliver) []errs.FieldError {
	if d == nil {
		return nil
	}
	var fs []errs.FieldError
	if s.deliver == nil {
		return append(fs, errs.FieldError{Field: "deliver", Reason: "repositories are not configured on this server"})
	}
	b := d.Branch
	if b == "" {
		fs = append(fs, errs.FieldError{Field: "deliver.branch", Reason: "is required (e.g. agent/fix-login)"})
	} else if !deliverBranchRE.MatchString(b) || strings.Contains(b, "..") || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".lock") {
		fs = append(fs, errs.FieldError{Field: "deliver.branch", Reason: "not a branch name"})
	}
	if d.Base != "" && (!deliverBranchRE.MatchString(d.Base) || strings.Contains(d.Base, "..") || strings.HasPrefix(d.Base, "-")) {
		fs = append(fs, errs.FieldError{Field: "deliver.base", Reason: "not a branch name"})
	}
	if len(d.Title) > 1024 {
		fs = append(fs, errs.FieldError{Field: "deliver.title", Reason: "longer than 1024 bytes"})
	}
	if len(d.Repo) > 255 {
		fs = append(fs, errs.FieldError{Field: "deliver.repo", Reason: "longer than 255 bytes"})
	}
	return fs
}

// deliverRun runs the deliver option of a succeeded run and records what
// happened as a delivery event. A failure does not fail the run: the work
// is in the sandbox, and the event says why it was not delivered.
func (s *Service) deliverRun(ctx context.Context, r Run, log *slog.Logger) {
	if s.deliver == nil {
		return
	}
	data, err := s.deliver(ctx, r)
	data.Branch = r.Options.Deliver.Branch
	if err != nil {
		data.Error = publicText(err)
		if _, ok := errs.Public(err); !ok {
			data.Error = "the run's changes could not be delivered"
		}
		log.Warn("deliver run", "err", err)
	}
	if _, err := s.hub.Append(ctx, r.ID, NewEvent(TypeDelivery, data, "")); err != nil {
		log.Error("append delivery event", "err", err)
	}
}

// SandboxGatewayURL returns the base URL (http://addr) at which a sandbox
// reaches the server's in-sandbox gateway listener (opening it on first
// use), or the public URL for a driver without one. The git credential
// broker is served there too.
func (s *Service) SandboxGatewayURL(ctx context.Context, sb *sandbox.Sandbox) (string, error) {
	drv, err := s.sbx.DriverFor(sb)
	if err != nil {
		return "", err
	}
	if nl, ok := drv.(sandbox.NetListener); ok && s.gateway() != nil {
		addr, err := s.listener(ctx, sb, nl)
		if err != nil {
			return "", err
		}
		return "http://" + addr, nil
	}
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/"), nil
	}
	return "", ErrNoGateway
}
