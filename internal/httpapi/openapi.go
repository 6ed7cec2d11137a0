package httpapi

import (
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// apiOp documents one route for the OpenAPI document. Path is the chi
// pattern exactly as mounted ("/sandbox/{id}", "/sandbox/{id}/files/*").
// Request and Response are optional schema hints: a value of the Go type
// whose JSON shape is sent or answered (Response is wrapped in {"data": …}).
type apiOp struct {
	Method, Path, Summary string
	Request, Response     any
	// Public routes need no authentication.
	Public bool
	// Stream marks text/event-stream responses.
	Stream bool
	// Frames: the stream is also offered as execFramesType (Accept).
	Frames bool
	// NoDatabase marks routes served without the database: no 503 when
	// it is down (liveness, metrics, this document, the UI's files).
	NoDatabase bool
	// Storage marks routes that read or write the blob store or an S3
	// bucket (or the data dir's disk): 424 when S3 is unreachable, 507
	// when a disk is full.
	Storage bool
	// ProviderErrors: error bodies follow the upstream API's own format
	// (the LLM gateway's Anthropic and OpenAI passthroughs), not Error.
	ProviderErrors bool
	// Errors are the error statuses the route answers beyond those
	// errorStatuses derives from the fields above.
	Errors []int
	// Events names the event types of a Stream and the Go type of each
	// one's data (documented as named schemas, listed under x-events).
	Events map[string]any
	// Example is a request body example.
	Example any
}

// errorStatuses lists the error statuses op documents: the error table of
// docs/errors.md applied to this route. Every route may answer 503 while
// the database is down (unless NoDatabase); authenticated routes 401, and
// 403 for a cross-origin cookie write; routes with a path parameter 404;
// routes with a JSON body 400, 413 and 422; storage routes 424 and 507.
func errorStatuses(op apiOp) []int {
	set := map[int]bool{}
	if !op.Public {
		set[http.StatusUnauthorized] = true
		if op.Method != http.MethodGet && op.Method != http.MethodHead {
			set[http.StatusForbidden] = true
		}
	}
	if strings.Contains(op.Path, "{") || strings.HasSuffix(op.Path, "/*") {
		set[http.StatusNotFound] = true
	}
	if op.Request != nil {
		set[http.StatusBadRequest] = true
		set[http.StatusRequestEntityTooLarge] = true
		set[http.StatusUnprocessableEntity] = true
	}
	if op.Storage {
		set[http.StatusFailedDependency] = true
		set[http.StatusInsufficientStorage] = true
	}
	if !op.NoDatabase {
		set[http.StatusServiceUnavailable] = true
	}
	for _, c := range op.Errors {
		set[c] = true
	}
	out := make([]int, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Ints(out)
	return out
}

// errorDescriptions says, per status, which error codes it carries and what
// to do (docs/errors.md has the full table).
var errorDescriptions = map[int]string{
	http.StatusBadRequest:            "`malformed`: the body could not be parsed",
	http.StatusUnauthorized:          "`unauthenticated`: log in or send Authorization: Bearer <token>",
	http.StatusPaymentRequired:       "`payment_required`: an LLM budget is exhausted",
	http.StatusForbidden:             "`forbidden`: not allowed (or a cross-origin cookie write)",
	http.StatusNotFound:              "`not_found`: no such thing, or it is someone else's",
	http.StatusConflict:              "`conflict`: the state forbids it now (e.g. an active run)",
	http.StatusRequestEntityTooLarge: "`too_large`: the body or a file is above a limit (a sandbox's disk_mb included)",
	http.StatusUnprocessableEntity:   "`invalid`: `fields` names each bad field",
	http.StatusFailedDependency:      "`failed_dependency`: S3 (or a registry) refused or is unreachable; the message names the bucket",
	http.StatusTooManyRequests:       "`too_many_requests`: slow down (Retry-After when known)",
	http.StatusBadGateway:            "`bad_gateway`: an upstream model API answered badly, or nothing listens on the sandbox port",
	http.StatusServiceUnavailable:    "`unavailable`: the database is unreachable (retry after Retry-After), or a feature is not configured",
	http.StatusNotImplemented:        "`not_implemented`: the sandbox's driver lacks the feature (e.g. terminals on Modal)",
	http.StatusInsufficientStorage:   "`insufficient_storage`: a disk is full; the message names which (the data dir, the blob store, an S3 bucket)",
}

// apiOps lists every documented route, one slice per domain. Domain owners
// add their slice here (one line each); the test in openapi_test.go fails
// when this list and the router disagree.
func apiOps() [][]apiOp {
	return [][]apiOp{
		opsOps,
		gatewayOps,
		authOps,
		// Domain op lists: add ONE line each below.
		sandboxOps,
		llmOps,
		runOps,
		snapshotOps,
		secretOps,
		gitOps,
		gitBrokerOps,
		pprofOps,
		portOps,
		ptyOps,
		processOps,
		webhookOps,
		auditOps,
		presenceOps,
		teamOps,
		teamBudgetOps,
		teamSecretOps,
	}
}

// openAPIDoc builds the OpenAPI 3.1 document.
func openAPIDoc(version string) map[string]any {
	paths := map[string]map[string]any{}
	sg := newSchemaGen()
	for _, ops := range apiOps() {
		for _, op := range ops {
			p := openAPIPath(op.Path)
			item := paths[p]
			if item == nil {
				item = map[string]any{}
				paths[p] = item
			}
			item[strings.ToLower(op.Method)] = openAPIOperation(op, p, sg)
		}
	}
	schemas := sg.components
	schemas["Error"] = errorSchema()
	if version == "" {
		version = "dev"
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":   "TechBoss AI API",
			"version": version,
			"description": "Successful responses are {\"data\": …}; errors are " +
				"{\"error\": {\"code\", \"message\", \"request_id\", \"fields\"?}}.",
		},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"bearer":  map[string]any{"type": "http", "scheme": "bearer"},
				"session": map[string]any{"type": "apiKey", "in": "cookie", "name": sessionCookie},
			},
			"schemas": schemas,
		},
		"security": []any{map[string]any{"bearer": []any{}}, map[string]any{"session": []any{}}},
	}
}

// openAPIPath turns a chi pattern into an OpenAPI path: a trailing "*"
// becomes the {path} parameter, and regexp constraints are dropped.
func openAPIPath(p string) string {
	if strings.HasSuffix(p, "/*") {
		p = strings.TrimSuffix(p, "*") + "{path}"
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(p, '{')
		if i < 0 {
			b.WriteString(p)
			break
		}
		j := strings.IndexByte(p[i:], '}')
		if j < 0 {
			b.WriteString(p)
			break
		}
		name, _, _ := strings.Cut(p[i+1:i+j], ":")
		b.WriteString(p[:i] + "{" + name + "}")
		p = p[i+j+1:]
	}
	return b.String()
}

func openAPIOperation(op apiOp, path string, sg *schemaGen) map[string]any {
	o := map[string]any{
		"summary":     op.Summary,
		"operationId": strings.ToLower(op.Method) + strings.NewReplacer("/", "_", "{", "", "}", "", ".", "_", "-", "_").Replace(path),
	}
	if op.Public {
		o["security"] = []any{}
	}
	var params []any
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			params = append(params, map[string]any{
				"name": seg[1 : len(seg)-1], "in": "path", "required": true, "schema": map[string]any{"type": "string"},
			})
		}
	}
	if params != nil {
		o["parameters"] = params
	}
	if op.Request != nil {
		media := map[string]any{"schema": sg.schema(reflect.TypeOf(op.Request))}
		if op.Example != nil {
			media["example"] = op.Example
		}
		o["requestBody"] = map[string]any{
			"required": true,
			"content":  map[string]any{"application/json": media},
		}
	}
	ok := map[string]any{"description": "success"}
	content := map[string]any{}
	if op.Response != nil {
		// Streams with a JSON form too (?wait=true, "stream": false).
		data := map[string]any{"type": "object", "required": []string{"data"},
			"properties": map[string]any{"data": sg.schema(reflect.TypeOf(op.Response))}}
		if op.ProviderErrors {
			data = map[string]any{"type": "object", "description": "the provider's own answer, unchanged"}
		}
		content["application/json"] = map[string]any{"schema": data}
	} else if op.Stream && op.ProviderErrors {
		content["application/json"] = map[string]any{"schema": map[string]any{"type": "object", "description": "the provider's own answer, unchanged"}}
	}
	if op.Stream {
		sse := map[string]any{"schema": map[string]any{"type": "string"}}
		if len(op.Events) > 0 {
			events := map[string]any{}
			for name, v := range op.Events {
				events[name] = sg.schema(reflect.TypeOf(v))
			}
			sse["x-events"] = events
		}
		content["text/event-stream"] = sse
		if op.Frames {
			content[execFramesType] = map[string]any{"schema": map[string]any{"type": "string", "format": "binary",
				"description": "frames: an 8-byte header (kind: 0 heartbeat, 1 stdout, 2 stderr, 3 exit JSON, 4 error JSON; 3 zero bytes; payload length, uint32 big endian) and the payload"}}
		}
	}
	if len(content) > 0 {
		ok["content"] = content
	}
	errRef := map[string]any{"description": "error", "content": map[string]any{
		"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
	responses := map[string]any{"2XX": ok, "default": errRef}
	for _, c := range errorStatuses(op) {
		r := map[string]any{"description": errorDescriptions[c], "content": errRef["content"]}
		if op.ProviderErrors {
			r = map[string]any{"description": errorDescriptions[c] + " (in the provider's own error format)"}
		}
		if c == http.StatusServiceUnavailable || c == http.StatusTooManyRequests {
			r["headers"] = map[string]any{"Retry-After": map[string]any{
				"description": "seconds to wait before retrying", "schema": map[string]any{"type": "integer"}}}
		}
		responses[strconv.Itoa(c)] = r
	}
	o["responses"] = responses
	return o
}

func errorSchema() map[string]any {
	return map[string]any{
		"type": "object",
		"properties": map[string]any{"error": map[string]any{
			"type":     "object",
			"required": []string{"code", "message", "request_id"},
			"properties": map[string]any{
				"code":       map[string]any{"type": "string"},
				"message":    map[string]any{"type": "string"},
				"request_id": map[string]any{"type": "string"},
				"fields": map[string]any{"type": "array", "items": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"field": map[string]any{"type": "string"}, "reason": map[string]any{"type": "string"},
					},
				}},
			},
		}},
	}
}

var (
	timeType       = reflect.TypeFor[time.Time]()
	rawMessageType = reflect.TypeFor[json.RawMessage]()
)

// schemaGen derives JSON Schemas from Go types' JSON encodings. Named
// struct types become components (#/components/schemas/<Name>), so the
// SDKs generated from the document get one type per Go type.
type schemaGen struct {
	components map[string]any
	names      map[reflect.Type]string
}

func newSchemaGen() *schemaGen {
	return &schemaGen{components: map[string]any{}, names: map[reflect.Type]string{}}
}

// schema returns t's schema (a $ref for named structs).
func (g *schemaGen) schema(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := reflect.Zero(t).Interface().(interface{ JSONSchema() map[string]any }); ok {
		return s.JSONSchema()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawMessageType:
		return map[string]any{}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Struct:
		if t.Name() == "" {
			return g.structSchema(t)
		}
		name, ok := g.names[t]
		if !ok {
			name = g.componentName(t)
			g.names[t] = name
			g.components[name] = map[string]any{} // placeholder: recursion ends at the $ref
			g.components[name] = g.structSchema(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	case reflect.Interface:
		return map[string]any{}
	}
	return map[string]any{}
}

// componentName is the Go type's name, prefixed with its package's when
// another package's type took the name first.
func (g *schemaGen) componentName(t reflect.Type) string {
	name := t.Name()
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i] // generic instance
	}
	name = strings.ToUpper(name[:1]) + name[1:]
	if _, taken := g.components[name]; !taken {
		return name
	}
	pkg := t.PkgPath()
	if i := strings.LastIndexByte(pkg, '/'); i >= 0 {
		pkg = pkg[i+1:]
	}
	name = strings.ToUpper(pkg[:1]) + pkg[1:] + name
	for n := 2; ; n++ {
		if _, taken := g.components[name]; !taken {
			return name
		}
		name = strings.TrimRight(name, "0123456789") + strconv.Itoa(n)
	}
}

func (g *schemaGen) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	g.addStructFields(t, props, &required)
	s := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		sort.Strings(required)
		s["required"] = required
	}
	return s
}

func (g *schemaGen) addStructFields(t reflect.Type, props map[string]any, required *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.addStructFields(ft, props, required)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		omit := strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")
		sch := g.schema(f.Type)
		if !omit && nullable(f.Type) {
			// encoding/json writes null for a nil pointer, slice or map.
			sch = orNull(sch)
		}
		props[name] = sch
		if !omit && f.Type.Kind() != reflect.Pointer {
			*required = append(*required, name)
		}
	}
}

// nullable reports whether a field of type t may be null in an answer: a
// nil pointer. Lists and maps are never null in answers (an empty one is
// [] or {}); the validation of the end-to-end tests' answers holds the
// handlers to that.
func nullable(t reflect.Type) bool {
	return t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface
}

// orNull lets s be null too.
func orNull(s map[string]any) map[string]any {
	if typ, ok := s["type"].(string); ok {
		out := maps.Clone(s)
		out["type"] = []string{typ, "null"}
		return out
	}
	if len(s) == 0 {
		return s // anything, null included
	}
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}

// handleOpenAPI serves the document.
func (s *server) handleOpenAPI() http.HandlerFunc {
	// Built at the first request, not at start: building it allocates ~3 MB
	// and the answer is ~0.4 MB that an idle server need not hold.
	doc := sync.OnceValues(func() ([]byte, error) {
		return json.MarshalIndent(openAPIDoc(s.deps.Version), "", "  ")
	})
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := doc()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}
}
