package oidc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/oidc"
	"github.com/smdelegate/smdelegate/manager/store"
)

// fakeKeyStore is an in-memory oidc.KeyStore. The function fields, when
// set, run before the operation and fail it by returning an error.
type fakeKeyStore struct {
	PutErr    func(k *store.SigningKey) error
	ListErr   func() error
	DeleteErr func(id string) error

	calls atomic.Int64 // every call, failed or not

	mu   sync.Mutex // guards keys
	keys map[string]*store.SigningKey
}

var _ oidc.KeyStore = (*fakeKeyStore)(nil)

func newFakeKeyStore() *fakeKeyStore {
	return &fakeKeyStore{keys: map[string]*store.SigningKey{}}
}

func copyKey(k *store.SigningKey) *store.SigningKey {
	c := *k
	c.Private = bytes.Clone(k.Private)
	c.Public = bytes.Clone(k.Public)
	return &c
}

func (f *fakeKeyStore) PutSigningKey(_ context.Context, k *store.SigningKey) error {
	f.calls.Add(1)
	if f.PutErr != nil {
		if err := f.PutErr(k); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[k.ID] = copyKey(k)
	return nil
}

func (f *fakeKeyStore) ListSigningKeys(context.Context) ([]*store.SigningKey, error) {
	f.calls.Add(1)
	if f.ListErr != nil {
		if err := f.ListErr(); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*store.SigningKey, 0, len(f.keys))
	for _, k := range f.keys {
		out = append(out, copyKey(k))
	}
	return out, nil
}

func (f *fakeKeyStore) DeleteSigningKey(_ context.Context, id string) error {
	f.calls.Add(1)
	if f.DeleteErr != nil {
		if err := f.DeleteErr(id); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.keys[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.keys, id)
	return nil
}

// get returns a copy of the stored key, or nil.
func (f *fakeKeyStore) get(id string) *store.SigningKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k, ok := f.keys[id]; ok {
		return copyKey(k)
	}
	return nil
}

// ids returns the stored key ids.
func (f *fakeKeyStore) ids() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for id := range f.keys {
		out[id] = true
	}
	return out
}

// clock is a settable time source for Options.Now.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustSealer(tb testing.TB) *seal.Sealer {
	tb.Helper()
	key, err := seal.LoadKey("", seal.GenerateKey())
	if err != nil {
		tb.Fatalf("LoadKey: %v", err)
	}
	s, err := seal.New(key)
	if err != nil {
		tb.Fatalf("seal.New: %v", err)
	}
	return s
}

// testServer serves an issuer's handler on 127.0.0.1. Its URL is known
// before the issuer exists, so it can be the issuer URL.
type testServer struct {
	*httptest.Server
	h atomic.Pointer[http.Handler]
}

func newTestServer(tb testing.TB) *testServer {
	tb.Helper()
	ts := &testServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := ts.h.Load()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		(*h).ServeHTTP(w, r)
	}))
	tb.Cleanup(ts.Close)
	return ts
}

func (ts *testServer) serve(h http.Handler) { ts.h.Store(&h) }

// env is an issuer served over HTTP with its store, sealer and clock.
type env struct {
	iss    *oidc.Issuer
	srv    *testServer
	ks     *fakeKeyStore
	sealer *seal.Sealer
	clock  *clock
}

// mustEnv starts an issuer on a fresh store and server. opts.IssuerURL
// defaults to the server's URL and opts.Now to a settable clock.
func mustEnv(tb testing.TB, opts oidc.Options) *env {
	tb.Helper()
	e := &env{srv: newTestServer(tb), ks: newFakeKeyStore(), sealer: mustSealer(tb), clock: newClock()}
	if opts.IssuerURL == "" {
		opts.IssuerURL = e.srv.URL
	}
	if opts.Now == nil {
		opts.Now = e.clock.Now
	}
	e.iss = mustIssuer(tb, e.ks, e.sealer, opts)
	e.srv.serve(e.iss.Handler())
	return e
}

func mustIssuer(tb testing.TB, ks oidc.KeyStore, s *seal.Sealer, opts oidc.Options) *oidc.Issuer {
	tb.Helper()
	iss, err := oidc.New(tb.Context(), ks, s, opts)
	if err != nil {
		tb.Fatalf("oidc.New: %v", err)
	}
	return iss
}

func mustMint(tb testing.TB, iss *oidc.Issuer, c oidc.Claims) string {
	tb.Helper()
	tok, err := iss.Mint(c)
	if err != nil {
		tb.Fatalf("Mint(%+v): %v", c, err)
	}
	return tok
}

// getJSON fetches url and decodes its JSON body into v, returning the
// response (body closed).
func getJSON(tb testing.TB, url string, v any) *http.Response {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: read: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s = %s, want 200 OK", url, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		tb.Fatalf("GET %s: decode %q: %v", url, body, err)
	}
	return resp
}

// fetchJWKS fetches the key set served at the issuer URL's JWKS path.
func fetchJWKS(tb testing.TB, issuerURL string) jose.JSONWebKeySet {
	tb.Helper()
	var set jose.JSONWebKeySet
	getJSON(tb, issuerURL+oidc.JWKSPath, &set)
	return set
}

// kids returns the key ids of a set.
func kids(set jose.JSONWebKeySet) map[string]bool {
	out := map[string]bool{}
	for _, k := range set.Keys {
		out[k.KeyID] = true
	}
	return out
}

// verify checks raw against set as a relying party would: ES256 only, a
// kid naming a key in the set, a valid signature, and the standard claims
// at time now. It returns the standard and the smdelegate claims.
func verify(tb testing.TB, raw string, set jose.JSONWebKeySet, want jwt.Expected) (jwt.Claims, map[string]any, error) {
	tb.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return jwt.Claims{}, nil, err
	}
	if len(tok.Headers) != 1 {
		tb.Fatalf("token has %d headers, want 1", len(tok.Headers))
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		return jwt.Claims{}, nil, errNoKey(tok.Headers[0].KeyID)
	}
	var std jwt.Claims
	var all map[string]any
	if err := tok.Claims(keys[0].Public(), &std, &all); err != nil {
		return jwt.Claims{}, nil, err
	}
	if err := std.ValidateWithLeeway(want, 0); err != nil {
		return std, all, err
	}
	return std, all, nil
}

type errNoKey string

func (e errNoKey) Error() string { return "no key in the JWKS has kid " + string(e) }

// keyID returns the kid header of a token.
func keyID(tb testing.TB, raw string) string {
	tb.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		tb.Fatalf("ParseSigned: %v", err)
	}
	return tok.Headers[0].KeyID
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() zerolog.Logger { return zerolog.New(l).Level(zerolog.DebugLevel) }
