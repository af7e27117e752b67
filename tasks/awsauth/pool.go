// Package awsauth turns a connector's settings into an AWS Secrets Manager
// client signed with the connector's credentials: static access keys, the
// delegate's instance role (the SDK default chain), an STS assumed role, or
// an OIDC web identity. Clients are cached in a bounded Pool so that many
// tasks on one connector share one credentials cache (one AssumeRole call for
// a thousand tasks) and one HTTP transport (reused connections).
package awsauth

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Pool defaults.
const (
	DefaultMaxClients  = 64
	DefaultTTL         = time.Hour
	DefaultMaxAttempts = retry.DefaultMaxAttempts
	RetryModeStandard  = "standard"
	RetryModeAdaptive  = "adaptive"
)

// PoolOptions configures a Pool. The zero value is usable.
type PoolOptions struct {
	// MaxClients bounds the number of cached clients; the least recently
	// used is evicted beyond it. Default DefaultMaxClients.
	MaxClients int
	// TTL is how long a client (and its cached credentials) is kept after
	// it was built. Default DefaultTTL.
	TTL time.Duration
	// SessionName names the delegate in STS sessions (RoleSessionName); it
	// is sanitized with SessionName. Default "smdelegate".
	SessionName string
	// RetryMode is "standard" (default) or "adaptive".
	RetryMode string
	// MaxAttempts is the SDK's maximum attempts per call, retries included.
	// Default 3.
	MaxAttempts int
	// HTTPClient is shared by every client of the pool. Default: a client
	// over a transport tuned for many concurrent calls to few hosts.
	HTTPClient *http.Client
	// MaxBackoff caps the SDK's delay between retry attempts. Default the
	// SDK's (20 s). Tests set it low.
	MaxBackoff time.Duration
	// Policy is what this host lets connectors reach: env: and file:
	// references and endpoints beyond AWS's own. nil allows no reference
	// and AWS's endpoints only.
	Policy *Policy
}

// Pool is a bounded, TTL-limited LRU cache of Secrets Manager clients keyed
// by the connector settings that decide identity and endpoints. It is safe
// for concurrent use.
type Pool struct {
	maxClients  int
	ttl         time.Duration
	sessionName string
	retryMode   string
	maxAttempts int
	maxBackoff  time.Duration
	httpClient  *http.Client
	// httpErr is why the default HTTP client could not be built (an
	// unreadable AWS_CA_BUNDLE); every SecretsManager call returns it.
	httpErr error
	policy  *Policy
	now     func() time.Time

	mu sync.Mutex // guards lru and entries
	// lru holds *entry values, most recently used at the front.
	lru     *list.List
	entries map[string]*list.Element
}

// entry is one cached client. ready is closed once client or err is set;
// until then other callers for the same key wait on it, so concurrent first
// tasks on a connector build one client and one credentials cache.
type entry struct {
	key     string
	created time.Time
	ready   chan struct{}
	client  *secretsmanager.Client
	err     error
	token   *tokenHolder
}

// NewPool returns a Pool with opts, defaults filled in.
func NewPool(opts PoolOptions) *Pool {
	p := &Pool{
		maxClients:  opts.MaxClients,
		ttl:         opts.TTL,
		sessionName: SessionName(opts.SessionName),
		retryMode:   strings.ToLower(strings.TrimSpace(opts.RetryMode)),
		maxAttempts: opts.MaxAttempts,
		maxBackoff:  opts.MaxBackoff,
		httpClient:  opts.HTTPClient,
		policy:      opts.Policy,
		now:         time.Now,
		lru:         list.New(),
		entries:     make(map[string]*list.Element),
	}
	if p.maxClients <= 0 {
		p.maxClients = DefaultMaxClients
	}
	if p.ttl <= 0 {
		p.ttl = DefaultTTL
	}
	if p.maxAttempts <= 0 {
		p.maxAttempts = DefaultMaxAttempts
	}
	if p.retryMode != RetryModeAdaptive {
		p.retryMode = RetryModeStandard
	}
	if p.httpClient == nil {
		p.httpClient, p.httpErr = NewHTTPClient()
	}
	return p
}

// NewHTTPClient returns the pool's default HTTP client: keep-alive
// connections, enough idle connections per host for a busy delegate,
// bounded dial, TLS and response-header waits, and no redirects followed. Call deadlines come from the
// task's context. When AWS_CA_BUNDLE names a PEM file, its certificates are
// the trusted roots, as the SDK does for its own clients.
func NewHTTPClient() (*http.Client, error) {
	t := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if path := os.Getenv("AWS_CA_BUNDLE"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, &FieldError{Field: "AWS_CA_BUNDLE", Reason: fmt.Sprintf("file %s cannot be read", path), Kind: ErrInvalidSettings}
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, &FieldError{Field: "AWS_CA_BUNDLE", Reason: fmt.Sprintf("file %s holds no PEM certificate", path), Kind: ErrInvalidSettings}
		}
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	// No redirects: AWS's APIs answer in place, and following one would
	// re-send a signed request (and an AssumeRoleWithWebIdentity body,
	// token included) to a host the Policy never checked.
	return &http.Client{Transport: t, CheckRedirect: noRedirect}, nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// SecretsManager returns a client for connector c, from the cache when one
// was built for the same identity and endpoints within the TTL. For OIDC it
// hands c.web_identity_token to the client's credential provider, which uses
// it only when its cached credentials need a refresh.
//
// Errors wrap ErrInvalidSettings (a field can never work) or ErrCredentials
// (material could not be read on this host) and are *FieldError values
// naming the field, never its value; a refusal by the pool's Policy (a
// reference or an endpoint this host does not allow) also wraps
// ErrNotAllowed and names the setting to change. A refused connector
// sends nothing anywhere. Failures of the AWS credential
// provider itself surface later, from the client's calls, as
// *CredentialError.
func (p *Pool) SecretsManager(ctx context.Context, c *delegatev1.ConnectorSettings) (*secretsmanager.Client, error) {
	if p.httpErr != nil {
		return nil, p.httpErr
	}
	r, err := resolve(c, p.policy)
	if err != nil {
		return nil, err
	}
	key := r.cacheKey(p.sessionName)

	var e *entry
	for {
		var build bool
		e, build = p.lookup(key)
		if build {
			e.client, e.token, e.err = p.build(ctx, r)
			if e.err != nil {
				p.remove(e)
			}
			close(e.ready)
			break
		}
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// Another task's build failed because its own context ended: build
		// again under this task's context.
		if e.err != nil && (errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)) && ctx.Err() == nil {
			continue
		}
		break
	}
	if e.err != nil {
		return nil, e.err
	}
	if r.credType == delegatev1.CredentialType_OIDC {
		e.token.set(c.GetWebIdentityToken())
	}
	return e.client, nil
}

// Policy returns the policy the pool applies (nil: the default, which
// allows no reference and AWS's endpoints only).
func (p *Pool) Policy() *Policy { return p.policy }

// Len reports how many clients the pool holds.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

// lookup returns the live entry for key, or a new placeholder entry that the
// caller must build (build == true).
func (p *Pool) lookup(key string) (e *entry, build bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if el, ok := p.entries[key]; ok {
		e := el.Value.(*entry)
		if now.Sub(e.created) < p.ttl {
			p.lru.MoveToFront(el)
			return e, false
		}
		p.lru.Remove(el)
		delete(p.entries, key)
	}
	e = &entry{key: key, created: now, ready: make(chan struct{})}
	p.entries[key] = p.lru.PushFront(e)
	for p.lru.Len() > p.maxClients {
		old := p.lru.Back()
		p.lru.Remove(old)
		delete(p.entries, old.Value.(*entry).key)
	}
	return e, true
}

// remove drops e if it is still the entry for its key.
func (p *Pool) remove(e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.entries[e.key]; ok && el.Value.(*entry) == e {
		p.lru.Remove(el)
		delete(p.entries, e.key)
	}
}

func (p *Pool) build(ctx context.Context, r *resolved) (*secretsmanager.Client, *tokenHolder, error) {
	base, err := p.loadBase(ctx, r)
	if err != nil {
		// LoadDefaultConfig fails on a malformed shared config or env
		// setting; its message names the setting, not secret material.
		return nil, nil, &FieldError{Field: "connector.credential_type", Reason: "cannot load the delegate's AWS configuration: " + err.Error(), Kind: ErrCredentials}
	}
	if base.Region == "" {
		return nil, nil, invalidField("region", "is not set and the delegate has no AWS_REGION")
	}
	token := &tokenHolder{}
	cfg := base.Copy()
	cfg.Credentials = credentialsFor(r, base, p.sessionName, token)
	client := secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if r.endpointURL != "" {
			o.BaseEndpoint = aws.String(r.endpointURL)
		}
	})
	return client, token, nil
}

// newRetryer builds the retryer every client of the pool uses.
func (p *Pool) newRetryer() aws.Retryer {
	std := func(o *retry.StandardOptions) {
		o.MaxAttempts = p.maxAttempts
		if p.maxBackoff > 0 {
			o.MaxBackoff = p.maxBackoff
		}
	}
	if p.retryMode == RetryModeAdaptive {
		return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
			o.StandardOptions = append(o.StandardOptions, std)
		})
	}
	return retry.NewStandard(std)
}

// String describes the pool's settings for logs.
func (p *Pool) String() string {
	return fmt.Sprintf("awsauth.Pool{max=%d ttl=%s retry=%s attempts=%d}", p.maxClients, p.ttl, p.retryMode, p.maxAttempts)
}
