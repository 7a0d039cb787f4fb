package core

import "unicode/utf8"

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
