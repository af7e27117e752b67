package oidc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/smdelegate/smdelegate/manager/oidc"
	"github.com/smdelegate/smdelegate/manager/store"
)

var claims = oidc.Claims{Account: "acme", Connector: "aws_prod"}

// TestRotate: after Rotate new tokens carry the new kid; a token minted
// before still verifies against the served JWKS until the old key's
// Expires (TokenTTL + SyncInterval + a minute of skew); then the old key
// leaves the JWKS at once and Run deletes it from the store.
func TestRotate(t *testing.T) {
	t.Parallel()
	const ttl, interval = 5 * time.Minute, 20 * time.Millisecond
	e := mustEnv(t, oidc.Options{TokenTTL: ttl, SyncInterval: interval})
	oldKID := e.iss.ActiveKeyID()
	oldTok := mustMint(t, e.iss, claims)
	rotatedAt := e.clock.Now()

	if err := e.iss.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	newKID := e.iss.ActiveKeyID()
	if newKID == oldKID {
		t.Fatalf("ActiveKeyID after Rotate = %q, want a new key", newKID)
	}
	newTok := mustMint(t, e.iss, claims)
	if kid := keyID(t, newTok); kid != newKID {
		t.Errorf("token minted after Rotate has kid %q, want %q", kid, newKID)
	}

	wantExpires := rotatedAt.Add(ttl + interval + time.Minute)
	old := e.ks.get(oldKID)
	switch {
	case old == nil:
		t.Fatalf("retired key %s is gone from the store", oldKID)
	case !old.RetiredAt.Equal(rotatedAt) || !old.Expires.Equal(wantExpires):
		t.Errorf("retired key: RetiredAt %v, Expires %v; want %v, %v", old.RetiredAt, old.Expires, rotatedAt, wantExpires)
	case len(old.Private) != 0:
		t.Errorf("retired key still stores its private key (%d bytes)", len(old.Private))
	}
	if k := e.ks.get(newKID); k == nil || !k.RetiredAt.IsZero() || len(k.Private) == 0 {
		t.Errorf("new key in the store = %+v, want active with a sealed private key", k)
	}

	// Until Expires both keys are published and the old token verifies.
	e.clock.Advance(wantExpires.Sub(rotatedAt) - time.Second)
	set := fetchJWKS(t, e.srv.URL)
	if got := kids(set); !got[oldKID] || !got[newKID] || len(got) != 2 {
		t.Fatalf("JWKS just before Expires = %v, want %s and %s", got, oldKID, newKID)
	}
	if _, _, err := verify(t, oldTok, set, jwt.Expected{Issuer: e.srv.URL, Time: rotatedAt}); err != nil {
		t.Errorf("token minted before Rotate: verify = %v, want valid", err)
	}

	// At Expires the old key is unpublished even before a sync...
	e.clock.Advance(time.Second)
	set = fetchJWKS(t, e.srv.URL)
	if got := kids(set); got[oldKID] || !got[newKID] {
		t.Errorf("JWKS at Expires = %v, want only %s", got, newKID)
	}
	if _, _, err := verify(t, oldTok, set, jwt.Expected{Issuer: e.srv.URL, Time: rotatedAt}); err == nil {
		t.Errorf("token of the expired key still verifies")
	}

	// ...and Run deletes it from the store.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { e.iss.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.ks.get(oldKID) != nil && time.Now().Before(deadline) {
		time.Sleep(interval)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if got := e.ks.ids(); got[oldKID] || !got[newKID] {
		t.Errorf("store after Run = %v, want only %s", got, newKID)
	}
	if got := kids(e.iss.JWKS()); got[oldKID] || !got[newKID] {
		t.Errorf("JWKS() after Run = %v, want only %s", got, newKID)
	}
}

// TestScheduledRotation: Sync rotates only once the active key is
// RotateAfter old.
func TestScheduledRotation(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, oidc.Options{RotateAfter: time.Hour})
	first := e.iss.ActiveKeyID()

	e.clock.Advance(time.Hour - time.Second)
	if err := e.iss.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := e.iss.ActiveKeyID(); got != first {
		t.Errorf("ActiveKeyID before RotateAfter = %q, want %q", got, first)
	}
	e.clock.Advance(time.Second)
	if err := e.iss.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	second := e.iss.ActiveKeyID()
	if second == first {
		t.Errorf("ActiveKeyID at RotateAfter = %q, want a new key", second)
	}
	if got := kids(fetchJWKS(t, e.srv.URL)); !got[first] || !got[second] {
		t.Errorf("JWKS after scheduled rotation = %v, want both keys", got)
	}
	// A second sync at the same time changes nothing.
	if err := e.iss.Sync(t.Context()); err != nil || e.iss.ActiveKeyID() != second || len(e.ks.ids()) != 2 {
		t.Errorf("second Sync = %v, active %q, %d stored keys; want nil, %q, 2", err, e.iss.ActiveKeyID(), len(e.ks.ids()), second)
	}
}

// TestReplicasConverge: managers sharing a store follow each other's
// rotations on Sync, and when two rotated at once (two active keys) they
// agree on the newest and retire the other.
func TestReplicasConverge(t *testing.T) {
	t.Parallel()
	a := mustEnv(t, oidc.Options{})
	b := mustIssuer(t, a.ks, a.sealer, oidc.Options{IssuerURL: a.srv.URL, Now: a.clock.Now})
	if a.iss.ActiveKeyID() != b.ActiveKeyID() {
		t.Fatalf("second manager's key = %q, want the first's %q", b.ActiveKeyID(), a.iss.ActiveKeyID())
	}
	first := a.iss.ActiveKeyID()

	a.clock.Advance(time.Minute)
	if err := a.iss.Rotate(t.Context()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	tok := mustMint(t, a.iss, claims)
	if err := b.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if b.ActiveKeyID() != a.iss.ActiveKeyID() {
		t.Errorf("after Sync the second manager signs with %q, want %q", b.ActiveKeyID(), a.iss.ActiveKeyID())
	}
	if got := kids(b.JWKS()); !got[first] || !got[a.iss.ActiveKeyID()] {
		t.Errorf("second manager publishes %v, want the retired and the new key", got)
	}
	if _, _, err := verify(t, tok, b.JWKS(), jwt.Expected{Time: a.clock.Now()}); err != nil {
		t.Errorf("token from one manager against the other's JWKS: %v", err)
	}

	// Two managers rotate from the same state at once: each writes an active
	// key. Build that store from two independent issuers' keys.
	clock := newClock()
	shared := newFakeKeyStore()
	sealer := mustSealer(t)
	var made []string
	for range 2 {
		ks := newFakeKeyStore()
		iss := mustIssuer(t, ks, sealer, oidc.Options{IssuerURL: a.srv.URL, Now: clock.Now})
		for _, k := range mustList(t, ks) {
			if err := shared.PutSigningKey(t.Context(), k); err != nil {
				t.Fatal(err)
			}
		}
		made = append(made, iss.ActiveKeyID())
		clock.Advance(time.Second)
	}
	newest := made[1]
	r1 := mustIssuer(t, shared, sealer, oidc.Options{IssuerURL: a.srv.URL, Now: clock.Now})
	r2 := mustIssuer(t, shared, sealer, oidc.Options{IssuerURL: a.srv.URL, Now: clock.Now})
	if r1.ActiveKeyID() != newest || r2.ActiveKeyID() != newest {
		t.Errorf("with two active keys the managers sign with %q and %q, want the newest %q", r1.ActiveKeyID(), r2.ActiveKeyID(), newest)
	}
	if k := shared.get(made[0]); k == nil || k.RetiredAt.IsZero() || k.Expires.IsZero() {
		t.Errorf("older of two active keys = %+v, want retired with an expiry", k)
	}
	if got := kids(r2.JWKS()); !got[made[0]] || !got[newest] {
		t.Errorf("JWKS = %v, want both keys while the older one's tokens live", got)
	}
}

func mustList(t *testing.T, ks oidc.KeyStore) []*store.SigningKey {
	t.Helper()
	keys, err := ks.ListSigningKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestStoreFailures: a store that fails leaves the issuer signing with
// the key it had, and every failure is reported.
func TestStoreFailures(t *testing.T) {
	t.Parallel()
	boom := errors.New("store unavailable")

	t.Run("New cannot list", func(t *testing.T) {
		t.Parallel()
		ks := newFakeKeyStore()
		ks.ListErr = func() error { return boom }
		if _, err := oidc.New(t.Context(), ks, mustSealer(t), oidc.Options{IssuerURL: "https://smd.example.com"}); !errors.Is(err, boom) {
			t.Errorf("New = %v, want %v", err, boom)
		}
	})
	t.Run("New cannot store the first key", func(t *testing.T) {
		t.Parallel()
		ks := newFakeKeyStore()
		ks.PutErr = func(*store.SigningKey) error { return boom }
		if _, err := oidc.New(t.Context(), ks, mustSealer(t), oidc.Options{IssuerURL: "https://smd.example.com"}); !errors.Is(err, boom) {
			t.Errorf("New = %v, want %v", err, boom)
		}
	})
	t.Run("Sync cannot list", func(t *testing.T) {
		t.Parallel()
		e := mustEnv(t, oidc.Options{})
		kid := e.iss.ActiveKeyID()
		e.ks.ListErr = func() error { return boom }
		if err := e.iss.Sync(t.Context()); !errors.Is(err, boom) {
			t.Errorf("Sync = %v, want %v", err, boom)
		}
		if got := keyID(t, mustMint(t, e.iss, claims)); got != kid {
			t.Errorf("Mint after a failed Sync signs with %q, want %q", got, kid)
		}
	})
	t.Run("Rotate cannot store the new key", func(t *testing.T) {
		t.Parallel()
		e := mustEnv(t, oidc.Options{})
		kid := e.iss.ActiveKeyID()
		e.ks.PutErr = func(*store.SigningKey) error { return boom }
		if err := e.iss.Rotate(t.Context()); !errors.Is(err, boom) {
			t.Errorf("Rotate = %v, want %v", err, boom)
		}
		if got := e.iss.ActiveKeyID(); got != kid {
			t.Errorf("ActiveKeyID after a failed Rotate = %q, want %q", got, kid)
		}
		if got := kids(fetchJWKS(t, e.srv.URL)); len(got) != 1 || !got[kid] {
			t.Errorf("JWKS after a failed Rotate = %v, want only %s", got, kid)
		}
	})
	t.Run("Rotate cannot retire the old key", func(t *testing.T) {
		t.Parallel()
		e := mustEnv(t, oidc.Options{})
		old := e.iss.ActiveKeyID()
		e.ks.PutErr = func(k *store.SigningKey) error {
			if k.ID == old {
				return boom
			}
			return nil
		}
		if err := e.iss.Rotate(t.Context()); !errors.Is(err, boom) {
			t.Errorf("Rotate = %v, want %v", err, boom)
		}
		if e.iss.ActiveKeyID() == old {
			t.Errorf("ActiveKeyID after Rotate = the old key, want the new one")
		}
		// The old key is still active in the store; the next Sync retires it.
		e.clock.Advance(time.Second)
		e.ks.PutErr = nil
		if err := e.iss.Sync(t.Context()); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if k := e.ks.get(old); k == nil || k.RetiredAt.IsZero() {
			t.Errorf("old key after Sync = %+v, want retired", k)
		}
		if got := kids(e.iss.JWKS()); !got[old] || len(got) != 2 {
			t.Errorf("JWKS = %v, want the retired key still published", got)
		}
	})
	t.Run("Sync cannot delete an expired key", func(t *testing.T) {
		t.Parallel()
		e := mustEnv(t, oidc.Options{})
		old := e.iss.ActiveKeyID()
		if err := e.iss.Rotate(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour)
		e.ks.DeleteErr = func(string) error { return boom }
		if err := e.iss.Sync(t.Context()); !errors.Is(err, boom) {
			t.Errorf("Sync = %v, want %v", err, boom)
		}
		if got := kids(e.iss.JWKS()); got[old] {
			t.Errorf("JWKS = %v, want the expired key unpublished though still stored", got)
		}
		e.ks.DeleteErr = nil
		if err := e.iss.Sync(t.Context()); err != nil || e.ks.get(old) != nil {
			t.Errorf("Sync after recovery = %v, stored %v; want the expired key deleted", err, e.ks.get(old) != nil)
		}
	})
}
