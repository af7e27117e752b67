// Package seal encrypts secret material at rest with AES-256-GCM under the
// manager's master key: builtin credentials, OIDC signing keys, and task
// payloads that carry secret values. It also makes keyed digests (MAC) of
// data that must be compared later but never stored in the clear.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the master key's length in bytes (AES-256).
const KeySize = 32

// version prefixes every sealed value so the format can change.
const version byte = 1

// ErrOpen: the value was not sealed under this key, or was altered.
var ErrOpen = errors.New("seal: cannot decrypt (wrong master key or corrupted data)")

// Sealer seals and opens values. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
	// macKey is MAC's key, derived from the master key so that the
	// AES key is used for nothing else.
	macKey []byte
}

// macLabel derives the MAC key from the master key.
const macLabel = "smdelegate seal: MAC key v1"

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: master key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	h := hmac.New(sha256.New, key)
	h.Write([]byte(macLabel))
	return &Sealer{aead: aead, macKey: h.Sum(nil)}, nil
}

// MAC returns a keyed digest of data bound to context (like Seal's aad):
// HMAC-SHA256 under a key derived from the master key. Under one master
// key the same data and context give the same 32 bytes; without the key a
// digest tells nothing of data, so it may be stored where data may not
// (a request holding secret values, compared on a retry).
func (s *Sealer) MAC(data, context []byte) []byte {
	h := hmac.New(sha256.New, s.macKey)
	h.Write(binary.AppendUvarint(nil, uint64(len(context))))
	h.Write(context)
	h.Write(data)
	return h.Sum(nil)
}

// Seal encrypts plaintext; aad binds it to its context (e.g. the record's
// key) so a sealed value cannot be moved to another record.
func (s *Sealer) Seal(plaintext, aad []byte) []byte {
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		panic("seal: no randomness: " + err.Error())
	}
	return s.aead.Seal(out, out[1:1+s.aead.NonceSize()], plaintext, aad)
}

// Open decrypts a value made by Seal with the same aad.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n+s.aead.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	p, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return p, nil
}

// GenerateKey returns a new random master key, base64-encoded as
// LoadKey reads it.
func GenerateKey() string {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		panic("seal: no randomness: " + err.Error())
	}
	return base64.StdEncoding.EncodeToString(b)
}

// LoadKey reads the master key: from envValue when it is not empty (the
// SMD_MASTER_KEY variable), else from the file at path. Either holds the
// key base64-encoded (standard encoding, surrounding space ignored). Errors
// name the source and never include key material.
func LoadKey(path, envValue string) ([]byte, error) {
	src, raw := "SMD_MASTER_KEY", envValue
	if raw == "" {
		if path == "" {
			return nil, errors.New("master_key_file: no master key: set master_key_file or SMD_MASTER_KEY (smd master-key generate makes one)")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("master_key_file: %w", err)
		}
		src, raw = "master_key_file "+path, string(b)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("%s: must hold a base64-encoded %d-byte key (smd master-key generate makes one)", src, KeySize)
	}
	return key, nil
}
