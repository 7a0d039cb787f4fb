package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/convoice/convoice/api"
)

// Validator checks HTTP exchanges against the OpenAPI document the server
// serves (api/openapi.yaml): that the operation is described, that the
// answer's status, content type and body are the documented ones, and that
// the server accepts no request the document calls invalid. It is safe for
// concurrent use.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
	// wildcards are the path prefixes ("/ui/") of the operations whose last
	// path parameter takes the rest of the path, "/" included (marked
	// x-wildcard in the document; OpenAPI 3.0 cannot say it).
	wildcards []string
}

var (
	loadOnce  sync.Once
	loaded    *Validator
	loadError error
)

// LoadOpenAPI parses and validates the server's OpenAPI document.
func LoadOpenAPI() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPIDocument())
	if err != nil {
		return nil, fmt.Errorf("parse api/openapi.yaml: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("api/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	return doc, nil
}

// NewValidator returns the validator of the server's document (parsed once
// per test binary), failing the test when the document is not valid.
func NewValidator(t testing.TB) *Validator {
	t.Helper()
	loadOnce.Do(func() {
		// SCIM speaks JSON under its own media type (RFC 7644 §3.1).
		openapi3filter.RegisterBodyDecoder("application/scim+json", openapi3filter.JSONBodyDecoder)
		doc, err := LoadOpenAPI()
		if err != nil {
			loadError = err
			return
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			loadError = fmt.Errorf("route api/openapi.yaml: %w", err)
			return
		}
		v := &Validator{doc: doc, router: r}
		for path, item := range doc.Paths.Map() {
			if w, _ := item.Extensions["x-wildcard"].(bool); w {
				if i := strings.LastIndex(path, "{"); i > 0 {
					v.wildcards = append(v.wildcards, path[:i])
				}
			}
		}
		loaded = v
	})
	if loadError != nil {
		t.Fatalf("OpenAPI: %v", loadError)
	}
	return loaded
}

// Check validates one exchange (the request as sent with its body, and the
// answer's status, header and body) and reports any mismatch with
// t.Errorf, so it may be called from any goroutine. Bodies of
// text/event-stream answers are not validated (pass what was read, or nil).
func (v *Validator) Check(t testing.TB, req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) {
	t.Helper()
	if err := v.Validate(req, reqBody, status, header, respBody); err != nil {
		t.Errorf("OpenAPI: %s %s → %d does not match api/openapi.yaml: %v", req.Method, req.URL.RequestURI(), status, err)
	}
}

// Validate is Check returning the mismatch instead of reporting it.
func (v *Validator) Validate(req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) error {
	ctx := context.Background()
	r := req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	r.ContentLength = int64(len(reqBody))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
	if header == nil {
		header = http.Header{}
	}

	route, params, r, err := v.findRoute(r)
	if err != nil {
		if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
			// The server agrees when it answers not found or method not
			// allowed (under /api/v1 the token is checked first: 401).
			switch status {
			case http.StatusUnauthorized, http.StatusNotFound, http.StatusMethodNotAllowed:
				return v.checkErrorBody(header, respBody)
			}
			return fmt.Errorf("the operation is not described in the document (%v), yet the server answered %d", err, status)
		}
		return fmt.Errorf("find the operation: %w", err)
	}

	opts := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		MultiError:            true,
	}
	opts.WithCustomSchemaErrorFunc(schemaError)
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}
	if reqErr := openapi3filter.ValidateRequest(ctx, in); reqErr != nil && status < 400 {
		// A request the document calls invalid may well be refused (that
		// is what the error tests do); accepting it means the document
		// and the server disagree.
		return fmt.Errorf("the server answered %d to a request the document says is invalid: %v", status, reqErr)
	}

	respOpts := *opts
	if !isJSON(header.Get("Content-Type")) {
		respOpts.ExcludeResponseBody = true
		if err := v.checkContentType(route, r.Method, status, header.Get("Content-Type"), respBody); err != nil {
			return err
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: &respOpts}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return err
	}
	return nil
}

// CheckEvent validates one event of a conversation's stream (its SSE id:
// and event: fields and the JSON of its data: line) against the Event
// schema and the schema of its type's data, reporting with t.Errorf.
func (v *Validator) CheckEvent(t testing.TB, id, typ string, data []byte) {
	t.Helper()
	if err := v.ValidateEvent(id, typ, data); err != nil {
		t.Errorf("OpenAPI: event %s %s does not match api/openapi.yaml: %v\n%s", id, typ, err, data)
	}
}

// ValidateEvent is CheckEvent returning the mismatch.
func (v *Validator) ValidateEvent(id, typ string, data []byte) error {
	ref := v.doc.Components.Schemas["Event"]
	if ref == nil || ref.Value == nil {
		return errors.New("the document has no Event schema")
	}
	var env struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return fmt.Errorf("data is not a JSON object: %v", err)
	}
	if env.ID != id || env.Type != typ {
		return fmt.Errorf("the envelope says id %q type %q, the SSE fields id %q event %q", env.ID, env.Type, id, typ)
	}
	// The data against its type's schema first: the envelope's oneOf
	// would only say "matches none".
	names, _ := ref.Value.Extensions["x-data-schemas"].(map[string]any)
	name, _ := names[typ].(string)
	schema := v.doc.Components.Schemas[name]
	if schema == nil || schema.Value == nil {
		return fmt.Errorf("x-data-schemas of the Event schema names no schema for type %q", typ)
	}
	var payload any
	_ = json.Unmarshal(env.Data, &payload)
	if err := schema.Value.VisitJSON(payload, openapi3.SetSchemaErrorMessageCustomizer(schemaError)); err != nil {
		return fmt.Errorf("data is not a %s: %v", name, err)
	}
	var val any
	_ = json.Unmarshal(data, &val)
	if err := ref.Value.VisitJSON(val, openapi3.SetSchemaErrorMessageCustomizer(schemaError)); err != nil {
		return fmt.Errorf("envelope: %v", err)
	}
	return nil
}

// findRoute finds the operation of r; for the wildcard operations it also
// matches a rest of the path that has "/" in it.
func (v *Validator) findRoute(r *http.Request) (*routers.Route, map[string]string, *http.Request, error) {
	route, params, err := v.router.FindRoute(r)
	if err == nil || !errors.Is(err, routers.ErrPathNotFound) {
		return route, params, r, err
	}
	for _, prefix := range v.wildcards {
		rest, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok || !strings.Contains(rest, "/") {
			continue
		}
		r2 := r.Clone(r.Context()) // shares the body
		r2.URL.RawPath = prefix + url.PathEscape(rest)
		if route, params, err2 := v.router.FindRoute(r2); err2 == nil {
			params[strings.Trim(route.Path[len(prefix):], "{}")] = rest
			return route, params, r2, nil
		}
	}
	return nil, nil, r, err
}

// checkContentType checks a non-JSON answer's content type against the
// documented ones (kin-openapi only does that while validating the body).
func (v *Validator) checkContentType(route *routers.Route, method string, status int, ct string, body []byte) error {
	if method == http.MethodHead {
		return nil
	}
	ref := route.Operation.Responses.Status(status)
	if ref == nil {
		ref = route.Operation.Responses.Default()
	}
	if ref == nil || ref.Value == nil {
		return nil // ValidateResponse reports the undocumented status
	}
	content := ref.Value.Content
	switch {
	case len(content) == 0 && len(body) > 0:
		return fmt.Errorf("status %d is documented without a body, yet the answer has one (%s)", status, ct)
	case len(content) > 0 && ct != "" && content.Get(ct) == nil:
		return fmt.Errorf("content type %q is not documented for status %d", ct, status)
	}
	return nil
}

// checkErrorBody checks a JSON answer is the Error schema.
func (v *Validator) checkErrorBody(header http.Header, body []byte) error {
	if !isJSON(header.Get("Content-Type")) || len(body) == 0 {
		return nil
	}
	ref := v.doc.Components.Schemas["Error"]
	if ref == nil || ref.Value == nil {
		return errors.New("the document has no Error schema")
	}
	var val any
	if err := json.Unmarshal(body, &val); err != nil {
		return fmt.Errorf("error answer is not JSON: %v", err)
	}
	if err := ref.Value.VisitJSON(val, openapi3.SetSchemaErrorMessageCustomizer(schemaError)); err != nil {
		return fmt.Errorf("error answer does not match the Error schema: %v", err)
	}
	return nil
}

// schemaError words a schema mismatch in one line: where, and what (the
// default dumps the whole schema and value).
func schemaError(err *openapi3.SchemaError) string {
	return "at /" + strings.Join(err.JSONPointer(), "/") + ": " + err.Reason
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}
