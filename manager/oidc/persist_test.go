package oidc_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/oidc"
)

// TestKeysPersist: a second New on the same store reuses the active key
// (same kid, nothing written), and the stored private key is sealed under
// the master key, bound to its kid: the stored bytes hold neither the JWK
// "d" value nor the PKCS #8 encoding, and the public JWK has no private
// part.
func TestKeysPersist(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, oidc.Options{})
	kid := e.iss.ActiveKeyID()

	before := len(e.ks.ids())
	again := mustIssuer(t, e.ks, e.sealer, oidc.Options{IssuerURL: e.srv.URL, Now: e.clock.Now})
	if again.ActiveKeyID() != kid {
		t.Errorf("New on the same store: ActiveKeyID = %q, want %q", again.ActiveKeyID(), kid)
	}
	if after := len(e.ks.ids()); after != before {
		t.Errorf("New on the same store: %d keys stored, want %d", after, before)
	}
	// Tokens from either verify against the other's JWKS.
	if got := keyID(t, mustMint(t, again, claims)); got != kid {
		t.Errorf("reloaded issuer signs with %q, want %q", got, kid)
	}

	k := e.ks.get(kid)
	der, err := e.sealer.Open(k.Private, []byte("oidc-key/"+kid))
	if err != nil {
		t.Fatalf("Open(stored private key): %v", err)
	}
	if _, err := e.sealer.Open(k.Private, []byte("oidc-key/other")); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open with another key's aad = %v, want ErrOpen", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatalf("stored private key is not PKCS #8: %v", err)
	}
	priv := parsed.(*ecdsa.PrivateKey)
	d, err := priv.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string][]byte{
		"d":           d,
		"d base64url": []byte(base64.RawURLEncoding.EncodeToString(d)),
		"d base64":    []byte(base64.StdEncoding.EncodeToString(d)),
		"PKCS #8":     der,
	} {
		if bytes.Contains(k.Private, secret) {
			t.Errorf("stored private key contains the plaintext %s", name)
		}
		if bytes.Contains(k.Public, secret) {
			t.Errorf("stored public key contains the plaintext %s", name)
		}
	}
	var pub map[string]any
	if err := json.Unmarshal(k.Public, &pub); err != nil {
		t.Fatalf("stored public key is not JSON: %v", err)
	}
	if _, ok := pub["d"]; ok || pub["kid"] != kid || pub["kty"] != "EC" || pub["crv"] != "P-256" {
		t.Errorf("stored public JWK = %v, want an EC P-256 public key with kid %s", pub, kid)
	}
}

// TestWrongMasterKey: a manager whose master key cannot open the active
// key refuses to start, says which key without echoing any of it, and
// writes nothing, not even when the key is due for rotation (a key its
// peers could not open).
func TestWrongMasterKey(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, oidc.Options{})
	k := e.ks.get(e.iss.ActiveKeyID())
	e.clock.Advance(2 * time.Hour)
	_, err := oidc.New(t.Context(), e.ks, mustSealer(t), oidc.Options{IssuerURL: e.srv.URL, Now: e.clock.Now, RotateAfter: time.Hour})
	if !errors.Is(err, seal.ErrOpen) || !strings.Contains(err.Error(), k.ID) {
		t.Fatalf("New with another master key = %v, want ErrOpen naming key %s", err, k.ID)
	}
	if strings.Contains(err.Error(), string(k.Private)) || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(k.Private)) {
		t.Errorf("error %q contains the sealed key", err)
	}
	if got := e.ks.ids(); len(got) != 1 || !e.ks.get(k.ID).RetiredAt.IsZero() {
		t.Errorf("store after the refused New holds %v, want only the untouched active key %s", got, k.ID)
	}
}

// TestLogsHoldNoSecrets plants the material an issuer handles (private
// keys, minted tokens, claims context) and shows no log line carries it
// through New, Mint, Rotate, Sync and pruning.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	e := mustEnv(t, oidc.Options{Logger: logs.logger(), IssuerURL: "http://smd.example.com"})
	var planted []string
	plant := func(kid string) {
		k := e.ks.get(kid)
		if k == nil || len(k.Private) == 0 {
			return
		}
		der, err := e.sealer.Open(k.Private, []byte("oidc-key/"+kid))
		if err != nil {
			t.Fatal(err)
		}
		parsed, _ := x509.ParsePKCS8PrivateKey(der)
		d, _ := parsed.(*ecdsa.PrivateKey).Bytes()
		planted = append(planted, base64.RawURLEncoding.EncodeToString(d), base64.StdEncoding.EncodeToString(d),
			base64.StdEncoding.EncodeToString(k.Private))
	}
	plant(e.iss.ActiveKeyID())
	tok := mustMint(t, e.iss, oidc.Claims{Account: "a", Connector: "c", Context: map[string]string{"x": "planted-context-value"}})
	planted = append(planted, tok, strings.Split(tok, ".")[2], "planted-context-value")
	if err := e.iss.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	plant(e.iss.ActiveKeyID())
	e.clock.Advance(time.Hour)
	if err := e.iss.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{"retired", "deleted", "plain http"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	for _, secret := range planted {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain planted secret %.12q…", secret)
		}
	}
}
