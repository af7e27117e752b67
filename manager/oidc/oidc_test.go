package oidc_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/oidc"
)

// discovery is what a relying party reads from the discovery document.
type discovery struct {
	Issuer        string   `json:"issuer"`
	JWKSURI       string   `json:"jwks_uri"`
	ResponseTypes []string `json:"response_types_supported"`
	SubjectTypes  []string `json:"subject_types_supported"`
	SigningAlgs   []string `json:"id_token_signing_alg_values_supported"`
}

// TestDiscoveryAndJWKS fetches both documents over HTTP as AWS IAM does:
// the discovery document names the issuer and a jwks_uri under it, and the
// JWKS holds the active key as a public ES256 signing key.
func TestDiscoveryAndJWKS(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, oidc.Options{})

	var doc discovery
	resp := getJSON(t, e.srv.URL+"/.well-known/openid-configuration", &doc)
	want := discovery{
		Issuer:        e.srv.URL,
		JWKSURI:       e.srv.URL + "/.well-known/jwks.json",
		ResponseTypes: []string{"id_token"},
		SubjectTypes:  []string{"public"},
		SigningAlgs:   []string{"ES256"},
	}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("discovery document (-want +got):\n%s", diff)
	}
	checkHeaders(t, resp)

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, doc.JWKSURI, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", doc.JWKSURI, err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	checkHeaders(t, resp)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if k.KeyID != e.iss.ActiveKeyID() || k.KeyID == "" {
		t.Errorf("JWKS kid = %q, want the active key %q", k.KeyID, e.iss.ActiveKeyID())
	}
	if !k.IsPublic() || !k.Valid() || k.Algorithm != "ES256" || k.Use != "sig" {
		t.Errorf("JWKS key = {public %v, valid %v, alg %q, use %q}, want a valid public ES256 sig key", k.IsPublic(), k.Valid(), k.Algorithm, k.Use)
	}
	var generic struct{ Keys []map[string]any }
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"d", "p", "q"} {
		if _, ok := generic.Keys[0][field]; ok {
			t.Errorf("JWKS key has private field %q", field)
		}
	}
	if got := kids(e.iss.JWKS()); !cmp.Equal(got, kids(set)) {
		t.Errorf("JWKS() kids = %v, served %v", got, kids(set))
	}
}

func checkHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s Content-Type = %q, want application/json", resp.Request.URL, ct)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=") {
		t.Errorf("%s Cache-Control = %q, want a max-age", resp.Request.URL, cc)
	}
}

// TestMintVerifies verifies minted tokens with go-jose against the JWKS
// fetched over HTTP: signature by the key the kid names, issuer, audience,
// subject, lifetime, a unique jti, and the smdelegate claims (absent when
// not set).
func TestMintVerifies(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Minute
	e := mustEnv(t, oidc.Options{TokenTTL: ttl})
	set := fetchJWKS(t, e.srv.URL)

	tests := []struct {
		name    string
		claims  oidc.Claims
		wantSub string
		want    map[string]any // the smdelegate claims
	}{
		{
			name:    "account",
			claims:  oidc.Claims{Account: "acme", Connector: "aws_prod"},
			wantSub: "account:acme:connector:aws_prod",
			want:    map[string]any{"account": "acme", "connector": "aws_prod"},
		},
		{
			name:    "org",
			claims:  oidc.Claims{Account: "acme", Org: "payments", Connector: "aws_prod", TaskID: "t-1"},
			wantSub: "account:acme:org:payments:connector:aws_prod",
			want:    map[string]any{"account": "acme", "org": "payments", "connector": "aws_prod", "task_id": "t-1"},
		},
		{
			name: "project and context",
			claims: oidc.Claims{Account: "acme", Org: "payments", Project: "ledger", Connector: "sm",
				TaskID: "t-2", Context: map[string]string{"delegate": "host-1", "op": "get"}},
			wantSub: "account:acme:org:payments:project:ledger:connector:sm",
			want: map[string]any{"account": "acme", "org": "payments", "project": "ledger", "connector": "sm",
				"task_id": "t-2", "context": map[string]any{"delegate": "host-1", "op": "get"}},
		},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := mustMint(t, e.iss, tt.claims)
			if kid := keyID(t, raw); kid != e.iss.ActiveKeyID() {
				t.Errorf("kid = %q, want the active key %q", kid, e.iss.ActiveKeyID())
			}
			now := e.clock.Now()
			std, all, err := verify(t, raw, set, jwt.Expected{
				Issuer:      e.srv.URL,
				AnyAudience: jwt.Audience{"sts.amazonaws.com"},
				Subject:     tt.wantSub,
				Time:        now,
			})
			if err != nil {
				t.Fatalf("verify(Mint(%+v)) = %v, want a valid token", tt.claims, err)
			}
			if got := std.Expiry.Time(); !got.Equal(now.Add(ttl)) {
				t.Errorf("exp = %v, want now+%s = %v", got, ttl, now.Add(ttl))
			}
			if std.IssuedAt == nil || !std.IssuedAt.Time().Equal(now) {
				t.Errorf("iat = %v, want %v", std.IssuedAt, now)
			}
			if std.ID == "" || seen[std.ID] {
				t.Errorf("jti = %q, want a new unique id", std.ID)
			}
			seen[std.ID] = true
			got := map[string]any{}
			for _, k := range []string{"account", "org", "project", "connector", "task_id", "context"} {
				if v, ok := all[k]; ok {
					got[k] = v
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			// A verifier must reject it once expired, and for another audience.
			if _, _, err := verify(t, raw, set, jwt.Expected{Issuer: e.srv.URL, Time: now.Add(ttl + time.Second)}); !errors.Is(err, jwt.ErrExpired) {
				t.Errorf("verify after exp = %v, want ErrExpired", err)
			}
			if _, _, err := verify(t, raw, set, jwt.Expected{AnyAudience: jwt.Audience{"other"}, Time: now}); !errors.Is(err, jwt.ErrInvalidAudience) {
				t.Errorf("verify for another audience = %v, want ErrInvalidAudience", err)
			}
		})
	}
}

// TestMintInvalidClaims: claims that cannot make an unambiguous subject
// are refused with ErrInvalidClaims.
func TestMintInvalidClaims(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, oidc.Options{})
	tests := []struct {
		name   string
		claims oidc.Claims
	}{
		{"no account", oidc.Claims{Connector: "c"}},
		{"no connector", oidc.Claims{Account: "a"}},
		{"project without org", oidc.Claims{Account: "a", Project: "p", Connector: "c"}},
		{"colon in account", oidc.Claims{Account: "a:connector:x", Connector: "c"}},
		{"colon in connector", oidc.Claims{Account: "a", Connector: "c:x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := e.iss.Mint(tt.claims)
			if !errors.Is(err, oidc.ErrInvalidClaims) || tok != "" {
				t.Errorf("Mint(%+v) = %q, %v, want ErrInvalidClaims", tt.claims, tok, err)
			}
		})
	}
}

// TestNewInvalidOptions: New refuses options it cannot run with and names
// the field.
func TestNewInvalidOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		opts  oidc.Options
		field string
	}{
		{"no issuer", oidc.Options{}, "IssuerURL"},
		{"relative issuer", oidc.Options{IssuerURL: "smd.example.com"}, "IssuerURL"},
		{"other scheme", oidc.Options{IssuerURL: "ftp://smd.example.com"}, "IssuerURL"},
		{"query", oidc.Options{IssuerURL: "https://smd.example.com?x=1"}, "IssuerURL"},
		{"fragment", oidc.Options{IssuerURL: "https://smd.example.com#x"}, "IssuerURL"},
		{"negative ttl", oidc.Options{IssuerURL: "https://smd.example.com", TokenTTL: -time.Second}, "TokenTTL"},
		{"ttl over a day", oidc.Options{IssuerURL: "https://smd.example.com", TokenTTL: 25 * time.Hour}, "TokenTTL"},
		{"negative rotation", oidc.Options{IssuerURL: "https://smd.example.com", RotateAfter: -time.Hour}, "RotateAfter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ks := newFakeKeyStore()
			_, err := oidc.New(t.Context(), ks, mustSealer(t), tt.opts)
			if !errors.Is(err, oidc.ErrInvalidOptions) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("New(%+v) = %v, want ErrInvalidOptions naming %s", tt.opts, err, tt.field)
			}
			if n := ks.calls.Load(); n != 0 {
				t.Errorf("New with invalid options made %d store calls, want 0", n)
			}
		})
	}
}

// TestHandlerRoutes: only GET and HEAD of the two documents are served,
// under the issuer URL's path when it has one.
func TestHandlerRoutes(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	iss := mustIssuer(t, newFakeKeyStore(), mustSealer(t), oidc.Options{IssuerURL: srv.URL + "/oidc/"})
	srv.serve(iss.Handler())
	if got, want := iss.IssuerURL(), srv.URL+"/oidc"; got != want {
		t.Errorf("IssuerURL() = %q, want %q (no trailing slash)", got, want)
	}
	var doc discovery
	getJSON(t, srv.URL+"/oidc/.well-known/openid-configuration", &doc)
	if doc.Issuer != srv.URL+"/oidc" || doc.JWKSURI != srv.URL+"/oidc/.well-known/jwks.json" || doc.JWKSURI != iss.JWKSURL() {
		t.Errorf("discovery = {issuer %q, jwks_uri %q}, want both under %s/oidc", doc.Issuer, doc.JWKSURI, srv.URL)
	}
	var set jose.JSONWebKeySet
	getJSON(t, doc.JWKSURI, &set)

	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodHead, "/oidc/.well-known/jwks.json", http.StatusOK},
		{http.MethodHead, "/oidc/.well-known/openid-configuration", http.StatusOK},
		{http.MethodPost, "/oidc/.well-known/jwks.json", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/oidc/.well-known/openid-configuration", http.StatusMethodNotAllowed},
		{http.MethodGet, "/.well-known/jwks.json", http.StatusNotFound},
		{http.MethodGet, "/oidc/.well-known/keys", http.StatusNotFound},
	}
	for _, tt := range tests {
		req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
}

// TestMintConcurrent mints from many goroutines while keys rotate (run
// with -race), and shows that minting makes no store call.
func TestMintConcurrent(t *testing.T) {
	t.Parallel()
	e := mustEnv(t, oidc.Options{})

	before := e.ks.calls.Load()
	for range 100 {
		mustMint(t, e.iss, oidc.Claims{Account: "a", Connector: "c"})
	}
	if n := e.ks.calls.Load() - before; n != 0 {
		t.Errorf("100 Mints made %d store calls, want 0", n)
	}

	var wg sync.WaitGroup
	tokens := make(chan string, 8*50)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				tok, err := e.iss.Mint(oidc.Claims{Account: "a", Connector: "c"})
				if err != nil {
					t.Errorf("Mint: %v", err)
					return
				}
				tokens <- tok
			}
		})
	}
	for range 3 {
		if err := e.iss.Rotate(t.Context()); err != nil {
			t.Errorf("Rotate: %v", err)
		}
	}
	wg.Wait()
	close(tokens)
	set := fetchJWKS(t, e.srv.URL)
	if len(set.Keys) != 4 {
		t.Errorf("JWKS after 3 rotations has %d keys, want 4 (active + 3 retired)", len(set.Keys))
	}
	for tok := range tokens {
		if _, _, err := verify(t, tok, set, jwt.Expected{Issuer: e.srv.URL, Time: e.clock.Now()}); err != nil {
			t.Fatalf("token minted during rotation: verify = %v", err)
		}
	}
}
