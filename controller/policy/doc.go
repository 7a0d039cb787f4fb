// Package policy is the dial rules as pure functions: what people type
// normalised into E.164, the facts of a number, the dial policy's
// configuration and its number rules (deny list, countries, types,
// extensions). It never reads or writes the store: counting dials against
// the limits is the engine's (engine/dialpolicy.go).
package policy
