package core

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clip bounds a field to n bytes without splitting a character (for
// columns of a fixed size).
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Truncate bounds s to n characters for people to read, ending it with "…"
// when cut.
func Truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// MaxName is the longest display name, in characters, of a person or a
// guest.
const MaxName = 100

// Name is a display name as stored (trimmed), or why it is refused: one
// rule for every name — a person created by an admin or provisioned from a
// directory, and a guest naming themselves — so that no name can carry
// what another one may not: 1 to MaxName characters (counted as
// characters, not bytes), no control or format characters (NUL, line
// breaks, the right-to-left override U+202E, the zero-width space U+200B,
// …), valid UTF-8.
func Name(field, s string) (string, error) {
	name := strings.TrimSpace(s)
	if n := utf8.RuneCountInString(name); n == 0 || n > MaxName {
		return "", Invalid(field, "%s: a name of 1 to %d characters", field, MaxName)
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return "", Invalid(field, "%s: %q is not allowed in a name", field, r)
		}
	}
	return name, nil
}
