// Package oidc makes the manager an OpenID Connect issuer that AWS IAM can
// trust: it signs a short-lived ID token per task (ES256, audience
// sts.amazonaws.com, a subject naming the account and connector) for
// AssumeRoleWithWebIdentity, and serves the discovery document and JWKS
// that IAM reads to verify it.
//
// A task token's claims: iss, sub ("account:A[:org:O[:project:P]]:connector:ID"),
// aud, iat, nbf, exp, jti; account, org, project and connector (the parts
// of sub); task_id; and context, an object with the operation the token
// was minted for and the connector's connectivity (see ContextOperation).
//
// Signing keys live in the store, private halves sealed under the master
// key. Every manager sharing a store loads the same keys, publishes every
// key whose tokens may still be alive, and signs with the newest active
// one; rotation and pruning are idempotent, so replicas converge.
package oidc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/store"
)

// Defaults for Options.
const (
	// DefaultTokenTTL is short because a token is minted per task and only
	// needs to live until the delegate has exchanged it at STS.
	DefaultTokenTTL = 5 * time.Minute
	// DefaultRotateAfter is the age at which the active key is replaced.
	DefaultRotateAfter = 30 * 24 * time.Hour
	// DefaultAudience is the client id AWS IAM OIDC providers expect.
	DefaultAudience = "sts.amazonaws.com"
	// DefaultSyncInterval is how often Run reloads keys from the store.
	DefaultSyncInterval = 10 * time.Second
	// maxTokenTTL bounds TokenTTL: a longer-lived bearer token is a
	// liability, and AWS refuses ID tokens valid for more than a day.
	maxTokenTTL = 24 * time.Hour
	// clockSkew pads a retired key's publication for clocks that differ
	// between managers and verifiers.
	clockSkew = time.Minute
)

// Discovery paths, relative to the issuer URL.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/.well-known/jwks.json"
)

// Errors returned by the issuer.
var (
	// ErrInvalidClaims: Mint was given claims it cannot turn into an
	// unambiguous subject (a missing account or connector, a project
	// without an org, or a ':' inside a part).
	ErrInvalidClaims = errors.New("oidc: invalid claims")
	// ErrInvalidOptions: New was given options it cannot run with; the
	// message names the field.
	ErrInvalidOptions = errors.New("oidc: invalid options")
)

// KeyStore is the part of store.Catalog the issuer needs.
type KeyStore interface {
	// PutSigningKey creates or replaces a key by ID.
	PutSigningKey(ctx context.Context, k *store.SigningKey) error
	// ListSigningKeys returns every key.
	ListSigningKeys(ctx context.Context) ([]*store.SigningKey, error)
	// DeleteSigningKey removes a key, or returns store.ErrNotFound.
	DeleteSigningKey(ctx context.Context, id string) error
}

var _ KeyStore = (store.Catalog)(nil)

// Options configure an Issuer. Zero values take the defaults.
type Options struct {
	// IssuerURL is the "iss" claim and the base of the discovery URLs, for
	// example "https://smd.example.com" or "http://127.0.0.1:7071". AWS
	// requires https; a trailing slash is dropped.
	IssuerURL string
	// TokenTTL is each token's lifetime (default 5m, at most 24h).
	TokenTTL time.Duration
	// RotateAfter is the active key's age at which a new one replaces it
	// (default 30 days).
	RotateAfter time.Duration
	// Audience is the "aud" claim (default "sts.amazonaws.com").
	Audience string
	// SyncInterval is how often Run reloads, rotates and prunes keys
	// (default 10s). It bounds how long another manager sharing the store
	// keeps signing with a key this one retired, so it also pads the
	// retired key's publication.
	SyncInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives rotation and pruning events; never key material.
	Logger zerolog.Logger
}

// Keys and values of the "context" claim of the manager's task tokens.
//
// The subject pins the connector, and it is what an AWS IAM trust policy
// conditions on: for a generic OIDC provider IAM evaluates only the aud
// and sub claims (<issuer host>:aud, <issuer host>:sub), never a custom
// claim. The context says what the token was minted for, for audit and
// for relying parties that read any claim. A delegate (or the platform)
// caches the role session of a connector and reuses it for later tasks
// until it nears expiry, so the context describes the task that minted
// the token, not every call made with the session.
const (
	// ContextOperation is the task kind the token was minted for:
	// secret.create, secret.upsert, secret.update, secret.delete,
	// secret.restore, secret.get, secret.list, secret.describe or
	// secret.test (a connection test): the kind smd task list shows.
	ContextOperation = "operation"
	// ContextConnectivity is who exchanges the token at STS:
	// ConnectivityDelegate or ConnectivityPlatform, the connector's
	// oidc_connectivity.
	ContextConnectivity = "connectivity"
	// ConnectivityDelegate: a delegate the connector selects runs the
	// task (the role session is named after the delegate).
	ConnectivityDelegate = "delegate"
	// ConnectivityPlatform: the manager runs the task itself (the role
	// session is named smd-manager).
	ConnectivityPlatform = "platform"
)

// Claims name what a token is for.
type Claims struct {
	Account   string // required
	Org       string // optional
	Project   string // optional; requires Org
	Connector string // required: the connector's identifier
	TaskID    string // optional: the "task_id" claim
	// Context is copied into the "context" object claim when not empty.
	// The manager's task tokens carry ContextOperation and
	// ContextConnectivity.
	Context map[string]string
}

// Subject is the "sub" claim for c:
// "account:<a>[:org:<o>[:project:<p>]]:connector:<id>". It returns an
// error wrapping ErrInvalidClaims when the subject would be missing a part
// or ambiguous.
func (c Claims) Subject() (string, error) {
	parts := []struct{ name, value string }{{"account", c.Account}, {"org", c.Org}, {"project", c.Project}, {"connector", c.Connector}}
	var b strings.Builder
	for _, p := range parts {
		if strings.Contains(p.value, ":") {
			return "", fmt.Errorf("%w: %s must not contain ':'", ErrInvalidClaims, p.name)
		}
	}
	switch {
	case c.Account == "":
		return "", fmt.Errorf("%w: account is required", ErrInvalidClaims)
	case c.Connector == "":
		return "", fmt.Errorf("%w: connector is required", ErrInvalidClaims)
	case c.Project != "" && c.Org == "":
		return "", fmt.Errorf("%w: project requires org", ErrInvalidClaims)
	}
	for _, p := range parts {
		if p.value == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		b.WriteString(p.name + ":" + p.value)
	}
	return b.String(), nil
}

// tokenClaims is the JWT payload.
type tokenClaims struct {
	jwt.Claims
	Account   string            `json:"account"`
	Org       string            `json:"org,omitempty"`
	Project   string            `json:"project,omitempty"`
	Connector string            `json:"connector"`
	TaskID    string            `json:"task_id,omitempty"`
	Context   map[string]string `json:"context,omitempty"`
}

// Issuer signs tokens and serves discovery. Create it with New; it is safe
// for concurrent use.
type Issuer struct {
	ks       KeyStore
	sealer   *seal.Sealer
	issuer   string // IssuerURL without a trailing slash
	basePath string // IssuerURL's path without a trailing slash
	audience string
	ttl      time.Duration
	rotate   time.Duration
	interval time.Duration
	// retireFor is how long a retired key stays published: a token signed
	// just before retirement lives TokenTTL, another manager may sign with
	// it until its next sync, and clocks differ.
	retireFor time.Duration
	now       func() time.Time
	log       zerolog.Logger
	discovery []byte // the discovery document, built once

	// keys is the snapshot Mint and the handler read without locking.
	keys atomic.Pointer[keySet]

	// syncMu serialises Sync and Rotate so that one manager never races
	// itself against the store.
	syncMu sync.Mutex
}

// New loads the signing keys from ks, creates an ES256 key when none is
// active (or the active one is due for rotation), and returns an Issuer
// ready to Mint. It fails when the keys cannot be listed, the active key
// cannot be opened with s (a different master key), or a needed new key
// cannot be stored.
func New(ctx context.Context, ks KeyStore, s *seal.Sealer, opts Options) (*Issuer, error) {
	if ks == nil || s == nil {
		return nil, fmt.Errorf("%w: a key store and a sealer are required", ErrInvalidOptions)
	}
	issuer, basePath, err := parseIssuer(opts.IssuerURL)
	if err != nil {
		return nil, err
	}
	i := &Issuer{
		ks:       ks,
		sealer:   s,
		issuer:   issuer,
		basePath: basePath,
		audience: opts.Audience,
		ttl:      opts.TokenTTL,
		rotate:   opts.RotateAfter,
		interval: opts.SyncInterval,
		now:      opts.Now,
		log:      opts.Logger.With().Str("component", "oidc").Logger(),
	}
	if i.audience == "" {
		i.audience = DefaultAudience
	}
	if i.ttl == 0 {
		i.ttl = DefaultTokenTTL
	}
	if i.rotate == 0 {
		i.rotate = DefaultRotateAfter
	}
	if i.interval == 0 {
		i.interval = DefaultSyncInterval
	}
	if i.now == nil {
		i.now = time.Now
	}
	switch {
	case i.ttl < 0 || i.ttl > maxTokenTTL:
		return nil, fmt.Errorf("%w: TokenTTL: must be between 0 and %s, got %s", ErrInvalidOptions, maxTokenTTL, i.ttl)
	case i.rotate < 0:
		return nil, fmt.Errorf("%w: RotateAfter: must not be negative, got %s", ErrInvalidOptions, i.rotate)
	case i.interval < 0:
		return nil, fmt.Errorf("%w: SyncInterval: must not be negative, got %s", ErrInvalidOptions, i.interval)
	}
	i.retireFor = i.ttl + i.interval + clockSkew
	if i.discovery, err = i.discoveryDocument(); err != nil {
		return nil, err
	}
	if strings.HasPrefix(issuer, "http://") {
		i.log.Warn().Str("issuer", issuer).Msg("OIDC issuer is plain http: AWS IAM only trusts https issuers")
	}
	if err := i.sync(ctx, false); err != nil {
		if i.keys.Load() == nil {
			return nil, err
		}
		// The issuer can sign; what failed (retiring or pruning a key) is
		// retried by Run.
		i.log.Warn().Err(err).Msg("oidc: key maintenance incomplete")
	}
	return i, nil
}

// parseIssuer validates an issuer URL and returns it without a trailing
// slash, and its path likewise.
func parseIssuer(raw string) (issuer, path string, err error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", "", fmt.Errorf("%w: IssuerURL: must be an absolute http(s) URL without query or fragment, got %q", ErrInvalidOptions, raw)
	}
	return strings.TrimSuffix(raw, "/"), strings.TrimSuffix(u.EscapedPath(), "/"), nil
}

// IssuerURL is the "iss" claim of every token.
func (i *Issuer) IssuerURL() string { return i.issuer }

// JWKSURL is where the key set is served: IssuerURL + JWKSPath.
func (i *Issuer) JWKSURL() string { return i.issuer + JWKSPath }

// Mint returns a signed ES256 JWT for c, valid from now for TokenTTL, with
// a "kid" header naming the active key. It touches no store and is safe
// for concurrent use. Errors wrap ErrInvalidClaims for bad claims.
func (i *Issuer) Mint(c Claims) (string, error) {
	sub, err := c.Subject()
	if err != nil {
		return "", fmt.Errorf("oidc: mint: %w", err)
	}
	ks := i.keys.Load()
	now := i.now()
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("oidc: mint: %w", err)
	}
	tc := tokenClaims{
		Claims: jwt.Claims{
			Issuer:    i.issuer,
			Subject:   sub,
			Audience:  jwt.Audience{i.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			Expiry:    jwt.NewNumericDate(now.Add(i.ttl)),
			ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
		},
		Account:   c.Account,
		Org:       c.Org,
		Project:   c.Project,
		Connector: c.Connector,
		TaskID:    c.TaskID,
	}
	if len(c.Context) > 0 {
		tc.Context = c.Context
	}
	tok, err := jwt.Signed(ks.signer).Claims(tc).Serialize()
	if err != nil {
		return "", fmt.Errorf("oidc: mint: sign with key %s: %w", ks.kid, err)
	}
	return tok, nil
}

// ActiveKeyID is the "kid" of the key Mint signs with.
func (i *Issuer) ActiveKeyID() string { return i.keys.Load().kid }

// JWKS returns the public keys currently published: the active key and
// every retired key whose tokens may still be alive, active key first.
// The slice is the caller's; the keys it holds are shared and read-only.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	return i.keys.Load().published(i.now())
}
