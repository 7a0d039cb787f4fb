package core

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"
)

// NewID returns a UUID of version 7 (RFC 9562): the time in milliseconds,
// then 74 random bits. Leg and conference ids go to the PBX unchanged as
// channel / bridge ids and origination_uuid, which FreeSWITCH expects in
// UUID form. Time-ordered ids keep the databases' primary-key and foreign
// key indexes growing at their right edge: with random (version 4) ids
// every insert dirtied its own leaf page of every index, about 30 pages
// written per SQLite commit. Ids are not secrets (every id route checks
// membership; join links use NewSecret); the creation time they show is in
// the API anyway.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[6:])
	ms := uint64(time.Now().UnixMilli())
	b[0], b[1], b[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	b[3], b[4], b[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = b[6]&0x0f | 0x70
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
