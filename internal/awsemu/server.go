// Package awsemu is a local AWS Secrets Manager and STS endpoint for tests and
// `smd dev`.
//
// One [Server] serves both services on one HTTP handler, the way the real
// aws-sdk-go-v2 clients talk to AWS: Secrets Manager over the JSON 1.1
// protocol (X-Amz-Target: secretsmanager.<Action>) and STS over the query
// protocol (form-encoded Action=...&Version=2011-06-15, XML replies). Every
// signed request is verified with SigV4 against the registered credentials,
// temporary credentials issued by AssumeRole and AssumeRoleWithWebIdentity
// expire, and web identity tokens are checked against the configured OIDC
// providers and their JWKS.
//
// Tests drive it through the real SDK with BaseEndpoint pointed at the URL
// Start returns, inspect state with Secret, count calls with Calls and
// Requests, and inject faults with FailNext, InjectFault and SetLatency.
//
// The emulator never logs, and never puts a secret value, secret key, session
// token, web identity token or signature into an error message or into the
// recorded Requests.
package awsemu

import (
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DefaultAccessKeyID is the access key id New registers when Options.Credentials is empty.
const DefaultAccessKeyID = "AKIAEMULATOR00000001"

// DefaultSecretAccessKey is the secret access key paired with DefaultAccessKeyID.
const DefaultSecretAccessKey = "emulator/secret/key/0000000000000000000000"

const (
	defaultRegion    = "us-east-1"
	defaultAccountID = "123456789012"
	// maxBodyBytes bounds a request body: a 65,536-byte SecretBinary is about
	// 87 KiB once base64-encoded in JSON; leave generous room for the rest.
	maxBodyBytes = 1 << 20
)

// Options configures a Server. The zero value is usable.
//
// Requests must be signed for Region (STS requests may also be signed for
// us-east-1, its global endpoint's region), as AWS refuses a signature
// scoped to another region.
type Options struct {
	Region    string // default "us-east-1"
	AccountID string // default "123456789012"
	// Credentials maps access key id -> secret access key accepted for SigV4. If empty, New registers
	// DefaultAccessKeyID/DefaultSecretAccessKey.
	Credentials map[string]string
	// Roles that AssumeRole / AssumeRoleWithWebIdentity may assume, by role ARN. An unknown role ARN -> AccessDenied.
	Roles map[string]Role
	// OIDCProviders trusted by AssumeRoleWithWebIdentity, by issuer URL (the token's "iss").
	OIDCProviders map[string]OIDCProvider
	Now           func() time.Time // default time.Now
}

// Role is an IAM role that STS lets callers assume.
type Role struct {
	ExternalID         string        // if set, AssumeRole must pass exactly this ExternalId, else AccessDenied
	MaxSessionDuration time.Duration // default 1h; DurationSeconds above it -> ValidationError
}

// OIDCProvider is an IAM OIDC identity provider trusted by AssumeRoleWithWebIdentity.
type OIDCProvider struct {
	ClientIDs []string // accepted "aud" values, e.g. "sts.amazonaws.com"
	// Exactly one of: JWKSURL (fetched over HTTP when a token arrives, cached briefly) or Keys (a static set).
	JWKSURL string
	Keys    *jose.JSONWebKeySet
}

// Request is one request the Server received, recorded in arrival order.
//
// Params holds the decoded JSON body (Secrets Manager) or the form values
// (STS: a string, or []string for a repeated key). SecretString, SecretBinary
// and WebIdentityToken are replaced by "<redacted>": use Server.Secret to see
// stored values. Callers must not modify Params.
type Request struct {
	Service     string // "secretsmanager" or "sts"
	Action      string // e.g. "CreateSecret"
	AccessKeyID string // from the Authorization header, even when it was refused; "" when unsigned
	Params      map[string]any
	Time        time.Time // by Options.Now
}

// Server is the emulator. Create it with New; it is safe for concurrent use.
type Server struct {
	region    string
	accountID string
	now       func() time.Time
	roles     map[string]Role
	providers map[string]OIDCProvider

	jwks *jwksCache

	conns atomic.Int64 // TCP connections accepted since New or ResetCounters

	srvMu   sync.Mutex // guards httpSrv
	httpSrv *http.Server

	mu       sync.Mutex // guards every field below
	creds    map[string]*credential
	secrets  map[string]*secret // by name
	calls    map[string]int     // by "service.Action"
	requests []Request
	faults   map[string][]Fault // pending faults by "service.Action" ("" = any action)
	latency  map[string]time.Duration
}

// New returns a Server configured by opts. It does not listen: use Start, or
// mount the Server as an http.Handler.
func New(opts Options) *Server {
	s := &Server{
		region:    opts.Region,
		accountID: opts.AccountID,
		now:       opts.Now,
		roles:     maps.Clone(opts.Roles),
		providers: maps.Clone(opts.OIDCProviders),
		creds:     map[string]*credential{},
		secrets:   map[string]*secret{},
		calls:     map[string]int{},
		faults:    map[string][]Fault{},
		latency:   map[string]time.Duration{},
	}
	if s.region == "" {
		s.region = defaultRegion
	}
	if s.accountID == "" {
		s.accountID = defaultAccountID
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.roles == nil {
		s.roles = map[string]Role{}
	}
	if s.providers == nil {
		s.providers = map[string]OIDCProvider{}
	}
	s.jwks = newJWKSCache()
	if len(opts.Credentials) == 0 {
		s.AddCredentials(DefaultAccessKeyID, DefaultSecretAccessKey)
	}
	for id, key := range opts.Credentials {
		s.AddCredentials(id, key)
	}
	return s
}

// AddCredentials registers a long-term access key. Its caller identity is the
// IAM user arn:aws:iam::ACCOUNT:user/<accessKeyID>. Registering an existing id
// replaces its secret.
func (s *Server) AddCredentials(accessKeyID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds[accessKeyID] = &credential{
		secret: secret,
		principal: principal{
			accessKeyID: accessKeyID,
			arn:         "arn:aws:iam::" + s.accountID + ":user/" + accessKeyID,
			userID:      uniqueID("AIDA", accessKeyID),
		},
	}
}

// Start listens on addr (for example "127.0.0.1:0") and serves in the
// background. It returns the base URL, "http://127.0.0.1:PORT", to use as the
// SDK's BaseEndpoint. A Server starts at most once.
func (s *Server) Start(addr string) (string, error) {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.httpSrv != nil {
		return "", errors.New("awsemu: server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	s.httpSrv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				s.conns.Add(1)
			}
		},
	}
	go s.httpSrv.Serve(ln) //nolint:errcheck // Serve returns ErrServerClosed after Close.
	return "http://" + ln.Addr().String(), nil
}

// Close stops serving and closes every connection. It is safe to call on a
// Server that was never started, and more than once.
func (s *Server) Close() error {
	s.jwks.close()
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.httpSrv == nil {
		return nil
	}
	err := s.httpSrv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Connections returns the number of TCP connections accepted since New or
// the last ResetCounters: a test asserts connection reuse with it.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// Calls returns how many requests named action ("secretsmanager.CreateSecret",
// "sts.AssumeRole", ...) arrived, including the ones that failed, were
// refused for their credentials, or met an injected fault.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// Requests returns every request recorded since New or the last
// ResetCounters, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ResetCounters clears Calls, Requests and Connections. Secrets, credentials,
// pending faults and latencies are kept.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
	s.requests = nil
	s.conns.Store(0)
}

// ServeHTTP serves both Secrets Manager and STS.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return
	}
	body, err := decodeContent(r.Header.Get("Content-Encoding"), raw)
	if err != nil {
		http.Error(w, "cannot decode request body", http.StatusBadRequest)
		return
	}

	c := &call{requestID: newRequestID(), r: r, raw: raw, body: body}
	if isSecretsManager(r) {
		c.service = serviceSM
		c.action = actionFromTarget(r.Header.Get("X-Amz-Target"))
	} else {
		c.service = serviceSTS
		c.form, err = stsForm(r, body)
		if err != nil {
			s.writeError(w, c, errSerialization("the request body is not a valid form"))
			return
		}
		c.action = c.form.Get("Action")
	}

	s.record(c)
	if err := s.wait(r.Context(), c.qualifiedAction()); err != nil {
		return // the client went away
	}

	if c.service == serviceSM && c.action == "" {
		s.writeError(w, c, &apiError{status: 400, code: "UnknownOperationException",
			message: "X-Amz-Target must name a Secrets Manager action: secretsmanager.<Action>"})
		return
	}
	if !(c.service == serviceSTS && c.action == "AssumeRoleWithWebIdentity") {
		p, aerr := s.authenticate(c)
		if aerr != nil {
			s.writeError(w, c, aerr)
			return
		}
		c.principal = p
	}
	if f, ok := s.takeFault(c.qualifiedAction()); ok {
		s.writeError(w, c, faultError(c.service, f))
		return
	}
	switch c.service {
	case serviceSM:
		s.serveSecretsManager(w, c)
	default:
		s.serveSTS(w, c)
	}
}

// isSecretsManager tells the two services apart: Secrets Manager requests
// carry X-Amz-Target, a JSON 1.1 body, or a SigV4 scope for secretsmanager;
// everything else is an STS query-protocol request.
func isSecretsManager(r *http.Request) bool {
	if r.Header.Get("X-Amz-Target") != "" || strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-amz-json") {
		return true
	}
	a, ok := parseAuthorization(r.Header.Get("Authorization"))
	return ok && a.service == serviceSM
}

// record counts the call and appends it to Requests.
func (s *Server) record(c *call) {
	req := Request{
		Service:     c.service,
		Action:      c.action,
		AccessKeyID: accessKeyFromAuthorization(c.r.Header.Get("Authorization")),
		Params:      c.params(),
		Time:        s.now(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[c.qualifiedAction()]++
	s.requests = append(s.requests, req)
}
