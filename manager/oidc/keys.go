package oidc

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/smdelegate/smdelegate/manager/store"
)

// keySet is an immutable snapshot of the keys: the signer of the active
// key and every public key to publish.
type keySet struct {
	kid    string
	signer *keySigner
	keys   []publicKey // active first, then newest first
}

// keySigner is an opened active key.
type keySigner struct {
	jose.Signer
	pub jose.JSONWebKey
}

type publicKey struct {
	jwk jose.JSONWebKey
	// expires is zero for the active key; a retired key is unpublished
	// from then on, even before the next sync prunes it.
	expires time.Time
}

// published is the JWKS at now.
func (ks *keySet) published(now time.Time) jose.JSONWebKeySet {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range ks.keys {
		if k.expires.IsZero() || now.Before(k.expires) {
			set.Keys = append(set.Keys, k.jwk)
		}
	}
	return set
}

// aad binds a sealed private key to its key id, so a sealed value cannot
// be moved to another record.
func aad(id string) []byte { return []byte("oidc-key/" + id) }

// generateKey makes a new ES256 key. Its id is the RFC 7638 thumbprint of
// its public key, so the id names the key wherever it is published.
func (i *Issuer) generateKey(now time.Time) (*store.SigningKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("oidc: generate key: %w", err)
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("oidc: generate key: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	pubJSON, err := json.Marshal(pub)
	if err != nil {
		return nil, fmt.Errorf("oidc: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("oidc: generate key: %w", err)
	}
	sealed := i.sealer.Seal(der, aad(pub.KeyID))
	clear(der)
	return &store.SigningKey{ID: pub.KeyID, Private: sealed, Public: pubJSON, CreatedAt: now}, nil
}

// parsePublic decodes a stored public JWK and checks it is a public
// ES256 key named by the record's id.
func parsePublic(k *store.SigningKey) (jose.JSONWebKey, error) {
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(k.Public, &jwk); err != nil {
		return jwk, fmt.Errorf("oidc: key %s: public key: %w", k.ID, err)
	}
	pub, ok := jwk.Key.(*ecdsa.PublicKey)
	switch {
	case !ok || pub.Curve != elliptic.P256():
		return jwk, fmt.Errorf("oidc: key %s: public key is not a P-256 EC key", k.ID)
	case jwk.KeyID != k.ID:
		return jwk, fmt.Errorf("oidc: key %s: public key has kid %q", k.ID, jwk.KeyID)
	}
	jwk.Algorithm, jwk.Use = string(jose.ES256), "sig"
	return jwk, nil
}

// signerFor opens the sealed private key of k and returns a signer that
// sets the "kid" header. The private key must match the public one.
func (i *Issuer) signerFor(k *store.SigningKey, pub jose.JSONWebKey) (jose.Signer, error) {
	der, err := i.sealer.Open(k.Private, aad(k.ID))
	if err != nil {
		return nil, fmt.Errorf("oidc: key %s: open private key: %w", k.ID, err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("oidc: key %s: private key is not PKCS #8", k.ID)
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || !priv.PublicKey.Equal(pub.Key) {
		return nil, fmt.Errorf("oidc: key %s: private key does not match the public key", k.ID)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: k.ID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("oidc: key %s: %w", k.ID, err)
	}
	return signer, nil
}

// Sync reloads the keys from the store and does the maintenance every
// manager sharing it agrees on: it keeps only the newest active key
// active (retiring the others, as when two managers rotated at once),
// rotates when the active key is older than RotateAfter or there is none,
// deletes retired keys past Expires, and publishes the rest. Run calls it
// every SyncInterval.
//
// The snapshot Mint and the handler use is replaced whenever the keys
// could be listed and the active key opened; errors retiring or pruning
// a key are returned (joined) but do not stop the rest.
func (i *Issuer) Sync(ctx context.Context) error { return i.sync(ctx, false) }

// Rotate makes a new active key at once, whatever the active key's age,
// and retires the old one: it signs nothing new but stays published until
// its Expires (TokenTTL plus SyncInterval plus a minute of clock skew
// from now), when its last tokens have expired. On error the issuer keeps
// signing with the key it had.
func (i *Issuer) Rotate(ctx context.Context) error { return i.sync(ctx, true) }

// Run calls Sync every SyncInterval, logging failures, until ctx is done.
func (i *Issuer) Run(ctx context.Context) {
	t := time.NewTicker(i.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := i.Sync(ctx); err != nil && ctx.Err() == nil {
				i.log.Warn().Err(err).Msg("oidc: key sync failed; retrying")
			}
		}
	}
}

// sync is Sync, and Rotate with force.
func (i *Issuer) sync(ctx context.Context, force bool) error {
	i.syncMu.Lock()
	defer i.syncMu.Unlock()

	stored, err := i.ks.ListSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("oidc: list signing keys: %w", err)
	}
	now := i.now()
	var errs []error

	// Partition into live keys (active, or retired and still published)
	// and expired ones.
	var live, active, expired []*store.SigningKey
	for _, k := range stored {
		if k == nil {
			continue
		}
		c := *k // edited below; the store's copy stays as it is
		k = &c
		if !k.RetiredAt.IsZero() && k.Expires.IsZero() {
			// Retired without an expiry: keep it no longer than a key
			// retired now would be.
			k.Expires = k.RetiredAt.Add(i.retireFor)
		}
		switch {
		case k.RetiredAt.IsZero():
			active = append(active, k)
			live = append(live, k)
		case now.Before(k.Expires):
			live = append(live, k)
		default:
			expired = append(expired, k)
		}
	}
	// Newest first; the id breaks ties so every manager picks the same key.
	slices.SortFunc(active, func(a, b *store.SigningKey) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(b.ID, a.ID))
	})
	var signer *keySigner
	if len(active) > 0 {
		// A manager that cannot open the key its peers sign with has the
		// wrong master key: it must not write anything, least of all a new
		// key the others could not open.
		if signer, err = i.signerOf(active[0]); err != nil {
			return err
		}
	}

	// Two managers that rotated at once leave two active keys: every
	// manager keeps the same one and retires the others.
	for _, k := range active[min(1, len(active)):] {
		errs = append(errs, i.retire(ctx, k, now))
	}
	active = active[:min(1, len(active))]

	if len(active) == 0 || force || !now.Before(active[0].CreatedAt.Add(i.rotate)) {
		created := now
		if len(active) > 0 && created.Before(active[0].CreatedAt.Add(time.Second)) {
			// Strictly newer than the key it replaces, even in a store that
			// keeps whole seconds, so every manager picks it should the
			// old key fail to retire and both look active.
			created = active[0].CreatedAt.Add(time.Second)
		}
		nk, err := i.generateKey(created)
		if err == nil {
			err = i.ks.PutSigningKey(ctx, nk)
		}
		switch {
		case err != nil && (force || len(active) == 0):
			return errors.Join(append(errs, fmt.Errorf("oidc: rotate: %w", err))...)
		case err != nil:
			// Keep signing with the key that is due; the next sync tries again.
			errs = append(errs, fmt.Errorf("oidc: rotate: %w", err))
		default:
			if len(active) > 0 {
				// If this fails the old key stays active in the store; the
				// next sync sees two and retires the older.
				errs = append(errs, i.retire(ctx, active[0], now))
			}
			i.log.Info().Str("kid", nk.ID).Bool("forced", force).Msg("oidc: new signing key")
			live = append(live, nk)
			active = []*store.SigningKey{nk}
			signer = nil
		}
	}

	for _, k := range expired {
		if err := i.ks.DeleteSigningKey(ctx, k.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			errs = append(errs, fmt.Errorf("oidc: delete expired key %s: %w", k.ID, err))
			continue
		}
		i.log.Info().Str("kid", k.ID).Msg("oidc: expired signing key deleted")
	}

	if signer == nil {
		// Open the new key as any manager will: this proves it was sealed
		// and stored in a form the store's readers can use.
		if signer, err = i.signerOf(active[0]); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	next := i.snapshot(active[0].ID, signer, live)
	i.keys.Store(next)
	return errors.Join(errs...)
}

// retire marks k retired from now and stores it without its private key:
// a retired key never signs again. It edits k in place so the caller
// publishes it with its expiry even when the store refused the write.
func (i *Issuer) retire(ctx context.Context, k *store.SigningKey, now time.Time) error {
	k.RetiredAt = now
	k.Expires = now.Add(i.retireFor)
	rec := *k
	rec.Private = nil
	if err := i.ks.PutSigningKey(ctx, &rec); err != nil {
		return fmt.Errorf("oidc: retire key %s: %w", k.ID, err)
	}
	i.log.Info().Str("kid", k.ID).Time("expires", k.Expires).Msg("oidc: signing key retired")
	return nil
}

// signerOf returns the signer for the active key k: the current one when
// k is already active, so a sync opens no private key in the steady state.
func (i *Issuer) signerOf(k *store.SigningKey) (*keySigner, error) {
	if cur := i.keys.Load(); cur != nil && cur.kid == k.ID {
		return cur.signer, nil
	}
	pub, err := parsePublic(k)
	if err != nil {
		return nil, err
	}
	s, err := i.signerFor(k, pub)
	if err != nil {
		return nil, err
	}
	return &keySigner{Signer: s, pub: pub}, nil
}

// snapshot builds the keySet for the active key and every live key.
func (i *Issuer) snapshot(kid string, signer *keySigner, live []*store.SigningKey) *keySet {
	ks := &keySet{kid: kid, signer: signer}
	ks.keys = append(ks.keys, publicKey{jwk: signer.pub})
	slices.SortFunc(live, func(a, b *store.SigningKey) int { return b.CreatedAt.Compare(a.CreatedAt) })
	var errs []error
	for _, k := range live {
		if k.ID == kid {
			continue
		}
		jwk, err := parsePublic(k)
		if err != nil {
			// A key that cannot be published cannot verify anything;
			// leave it out rather than serve a broken set.
			errs = append(errs, err)
			continue
		}
		ks.keys = append(ks.keys, publicKey{jwk: jwk, expires: k.Expires})
	}
	if len(errs) > 0 {
		i.log.Warn().Err(errors.Join(errs...)).Msg("oidc: unpublishable signing keys skipped")
	}
	return ks
}
