package controller

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// NewID returns a random UUID (version 4). Leg and conference ids go to the
// PBX unchanged as channel / bridge ids and origination_uuid, which
// FreeSWITCH expects in UUID form.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// NewSecret returns a token of 256 random bits, URL-safe.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// HashSecret is how tokens are stored: SHA-256, hex. Tokens carry 256 bits
// of entropy, so a fast hash is enough; a lookup by hash is a unique-index
// probe and the comparison happens in the database on the hash, not the
// secret.
func HashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
