package ariemu

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// JSON is written by hand rather than through encoding/json for two
// reasons: key order must match the recordings byte for byte (Jansson keeps
// insertion order, and events put e.g. "cause" before "type"), and at
// benchmark rates (thousands of events a second) appending into one buffer
// is much cheaper than reflecting over maps. Strings are escaped like
// Jansson's default: UTF-8 passes through, '<' '>' '&' and '/' are not
// escaped (encoding/json would turn "<100>" into "\u003c100\u003e").

const hexDigits = "0123456789abcdef"

func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"':
				b = append(b, '\\', '"')
			case '\\':
				b = append(b, '\\', '\\')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			// Invalid UTF-8 would make the whole message unparsable for
			// the client; Jansson refuses such strings, we replace them.
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendKey writes `"key":` (the key is a trusted literal).
func appendKey(b []byte, key string) []byte {
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

func appendStrField(b []byte, key, val string) []byte {
	return appendJSONString(appendKey(b, key), val)
}

func appendIntField(b []byte, key string, val int) []byte {
	return strconv.AppendInt(appendKey(b, key), int64(val), 10)
}

func appendStringArray(b []byte, vals []string) []byte {
	b = append(b, '[')
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, v)
	}
	return append(b, ']')
}

// astTimeLayout is Asterisk's ARI timestamp: millisecond precision and a
// numeric zone without colon ("2026-11-27T05:08:00.806+0000").
const astTimeLayout = "2006-01-02T15:04:05.000-0700"

func appendAstTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, astTimeLayout)
	return append(b, '"')
}

func formatAstTime(t time.Time) string {
	return t.UTC().Format(astTimeLayout)
}
