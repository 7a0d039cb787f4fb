package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/controller"
)

// maxBody bounds every request body.
const maxBody = 64 << 10

func badBody(field, format string, args ...any) error {
	code := "invalid_request"
	if field != "" {
		code = "invalid_" + field
	}
	return &controller.Error{Kind: controller.KindInvalid, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// readBody reads the raw body (bounded).
func readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, badBody("", "could not read the request body: %v", err)
	}
	if len(b) > maxBody {
		return nil, &controller.Error{Kind: controller.KindInvalid, Code: "body_too_large", Message: fmt.Sprintf("the request body is larger than %d bytes", maxBody)}
	}
	return b, nil
}

// decodeBody reads a JSON object into v strictly: unknown fields, wrong
// types, trailing data and non-JSON content types are 400s that name the
// field. An empty body decodes as {}.
func decodeBody(c echo.Context, v any) error {
	b, err := readBody(c)
	if err != nil {
		return err
	}
	return decodeJSON(c.Request(), b, v)
}

func decodeJSON(r *http.Request, b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}")
	} else if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return &controller.Error{Kind: controller.KindInvalid, Code: "unsupported_media_type", Message: "send JSON with Content-Type: application/json"}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return badBody("", "the body has data after its JSON object")
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return badBody("", "the body has data after its JSON object")
	}
	return nil
}

// jsonError words a decoding error for people, naming the field.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badBody("", "the body is not valid JSON (at byte %d): %v", syn.Offset, syn)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return badBody("", "the body must be a JSON object")
		}
		return badBody(field, "%s: must be %s, not %s", field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badBody(field, "%s: unknown field", field)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badBody("", "the body is truncated JSON")
	}
	return badBody("", "the body is not valid JSON: %v", err)
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "a list"
	case "struct", "map":
		return "an object"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	}
	return k
}
