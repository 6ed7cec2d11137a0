// Package openapitest checks real answers of the server against its
// OpenAPI document (kin-openapi), for tests: on the server side around a
// handler, and on the client side as an http.RoundTripper.
package openapitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// Validator checks answers against one OpenAPI document.
type Validator struct {
	router routers.Router
	// Checked counts the answers checked.
	Checked atomic.Int64
}

// New loads and validates the document (JSON).
func New(spec []byte) (*Validator, error) {
	doc, err := openapi3.NewLoader().LoadFromData(spec)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is not valid: %w", err)
	}
	doc.Servers = nil // any host: the tests' servers listen on random ports
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &Validator{router: r}, nil
}

// IsJSON reports whether a Content-Type names JSON.
func IsJSON(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// Check validates one answer to req. Routes the document does not know
// and answers that are not JSON (streams, files) are not checked.
func (v *Validator) Check(req *http.Request, status int, header http.Header, body []byte) error {
	if !IsJSON(header.Get("Content-Type")) {
		return nil
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return nil
	}
	v.Checked.Add(1)
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: status, Header: header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("%s %s → %d: %w\nbody: %.600s", req.Method, req.URL.Path, status, err, body)
	}
	return nil
}

// Transport checks every JSON answer base receives from host (host:port)
// and reports mismatches; the caller's body is left intact.
func (v *Validator) Transport(base http.RoundTripper, host string, report func(error)) http.RoundTripper {
	return &transport{v: v, base: base, host: host, report: report}
}

type transport struct {
	v      *Validator
	base   http.RoundTripper
	host   string
	report func(error)
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(req)
	if err != nil || req.URL.Host != t.host || !IsJSON(res.Header.Get("Content-Type")) {
		return res, err
	}
	b, rerr := io.ReadAll(res.Body)
	res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(b))
	if rerr != nil {
		return res, nil
	}
	if cerr := t.v.Check(req, res.StatusCode, res.Header, b); cerr != nil {
		t.report(cerr)
	}
	return res, nil
}

// CloseIdleConnections passes on to base (http.Client.CloseIdleConnections).
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
