package core

import (
	"errors"
	"fmt"
	"regexp"
)

// Kind classifies an Error; the API maps each kind to one HTTP status.
type Kind int

const (
	KindInvalid      Kind = iota + 1 // 400
	KindUnauthorized                 // 401
	KindForbidden                    // 403
	KindNotFound                     // 404
	KindConflict                     // 409
	KindRateLimited                  // 429
	KindPBXRefused                   // 502
	KindUnavailable                  // 503
)

// Error is a failure the caller can act on: a machine code, words for
// people, and (for bad input) the field at fault.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	Field   string
	Err     error // cause, for logs; never shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Invalid is bad input: the code names the field ("invalid_number").
func Invalid(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Code: "invalid_" + fieldCode(field), Message: fmt.Sprintf(format, args...), Field: field}
}

// fieldCode makes a stable machine code from a field name: list indexes
// are dropped ("numbers[2].number" → "numbers.number"); the field itself,
// indexes included, goes in Error.Field.
func fieldCode(field string) string {
	if field == "" {
		return "request"
	}
	return indexRe.ReplaceAllString(field, "")
}

var indexRe = regexp.MustCompile(`\[[0-9]+\]`)

// NotFound is the one answer for a thing that does not exist and one the
// caller may not see (a conversation they are not in): the same code and
// words, so ids cannot be probed.
func NotFound(what string) *Error {
	return &Error{Kind: KindNotFound, Code: "not_found", Message: what + " not found"}
}

// Conflict is a request the current state refuses.
func Conflict(code, format string, args ...any) *Error {
	return &Error{Kind: KindConflict, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Forbidden is a request the caller may not make.
func Forbidden(code, format string, args ...any) *Error {
	return &Error{Kind: KindForbidden, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Unavailable is no PBX to take the call right now.
func Unavailable(format string, args ...any) *Error {
	return &Error{Kind: KindUnavailable, Code: "pbx_unavailable", Message: fmt.Sprintf(format, args...)}
}

// AsError finds the *Error in err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
