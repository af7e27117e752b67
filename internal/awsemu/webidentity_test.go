package awsemu_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

const (
	oidcRole   = "arn:aws:iam::123456789012:role/oidc-delegate"
	issuer     = "https://manager.example.test/oidc"
	staticIss  = "https://static.example.test"
	brokenIss  = "https://broken.example.test"
	stsAud     = "sts.amazonaws.com"
	signingKID = "key-1"
)

// signingKey is an ES256 key for tokens.
type signingKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newSigningKey(t *testing.T, kid string) signingKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, priv: priv}
}

func (k signingKey) publicSet() *jose.JSONWebKeySet {
	return &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.ES256), Use: "sig"}}}
}

func (k signingKey) sign(t *testing.T, claims jwt.Claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claimsFor(iss, aud string, ttl time.Duration) jwt.Claims {
	now := time.Now()
	return jwt.Claims{Issuer: iss, Subject: "account/acme/connector/prod", Audience: jwt.Audience{aud},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(ttl))}
}

// jwksServer serves set on 127.0.0.1 and counts fetches.
func jwksServer(t *testing.T, set *jose.JSONWebKeySet) (string, *atomic.Int32) {
	t.Helper()
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/jwks", &fetches
}

func TestAssumeRoleWithWebIdentity(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, signingKID)
	jwksURL, fetches := jwksServer(t, key.publicSet())
	static := newSigningKey(t, "static")
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // a JWKS URL nobody answers

	s, url := mustStart(t, awsemu.Options{
		Roles: map[string]awsemu.Role{oidcRole: {}},
		OIDCProviders: map[string]awsemu.OIDCProvider{
			issuer:    {ClientIDs: []string{"other-client", stsAud}, JWKSURL: jwksURL},
			staticIss: {ClientIDs: []string{stsAud}, Keys: static.publicSet()},
			brokenIss: {ClientIDs: []string{stsAud}, JWKSURL: closed.URL + "/jwks"},
		},
	})
	s.PutSecretDirect("shared", "v", nil)
	st := stsClient(t, url, aws.AnonymousCredentials{}, func(o *sts.Options) { o.RetryMaxAttempts = 1 })
	impostor := newSigningKey(t, signingKID) // same kid, different key
	stranger := newSigningKey(t, "key-2")

	tests := []struct {
		name     string
		token    string
		role     string
		wantCode string
		wantType any
	}{
		{"valid", key.sign(t, claimsFor(issuer, stsAud, 5*time.Minute)), oidcRole, "", nil},
		{"valid with static keys", static.sign(t, claimsFor(staticIss, stsAud, 5*time.Minute)), oidcRole, "", nil},
		{"issuer with trailing slash", key.sign(t, claimsFor(issuer+"/", stsAud, 5*time.Minute)), oidcRole, "", nil},
		{"signed by another key with the same kid", impostor.sign(t, claimsFor(issuer, stsAud, 5*time.Minute)), oidcRole, "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
		{"signed by an unknown kid", stranger.sign(t, claimsFor(issuer, stsAud, 5*time.Minute)), oidcRole, "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
		{"expired", key.sign(t, claimsFor(issuer, stsAud, -time.Second)), oidcRole, "ExpiredTokenException", new(*ststypes.ExpiredTokenException)},
		{"wrong audience", key.sign(t, claimsFor(issuer, "someone-else", 5*time.Minute)), oidcRole, "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
		{"unknown issuer", key.sign(t, claimsFor("https://evil.example.test", stsAud, 5*time.Minute)), oidcRole, "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
		{"not a JWT", "definitely-not-a-jwt", oidcRole, "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
		{"JWKS unreachable", key.sign(t, claimsFor(brokenIss, stsAud, 5*time.Minute)), oidcRole, "IDPCommunicationError", new(*ststypes.IDPCommunicationErrorException)},
		{"unknown role", key.sign(t, claimsFor(issuer, stsAud, 5*time.Minute)), "arn:aws:iam::123456789012:role/other", "AccessDenied", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := st.AssumeRoleWithWebIdentity(t.Context(), &sts.AssumeRoleWithWebIdentityInput{
				RoleArn: aws.String(tt.role), RoleSessionName: aws.String("task-42"), WebIdentityToken: aws.String(tt.token)})
			if code := errorCode(err); code != tt.wantCode {
				t.Fatalf("AssumeRoleWithWebIdentity error = %v, want code %q", err, tt.wantCode)
			}
			if tt.wantType != nil && !errors.As(err, tt.wantType) {
				t.Errorf("AssumeRoleWithWebIdentity error = %T, want %T", err, tt.wantType)
			}
			if strings.Contains(errString(err), tt.token) {
				t.Errorf("error %q contains the token", err)
			}
			if err != nil {
				return
			}
			iss := issuer
			if strings.HasPrefix(tt.name, "valid with static") {
				iss = staticIss
			}
			got := []string{aws.ToString(out.SubjectFromWebIdentityToken), aws.ToString(out.Audience), aws.ToString(out.Provider), aws.ToString(out.AssumedRoleUser.Arn)}
			want := []string{"account/acme/connector/prod", stsAud,
				"arn:aws:iam::123456789012:oidc-provider/" + strings.TrimPrefix(iss, "https://"),
				"arn:aws:sts::123456789012:assumed-role/oidc-delegate/task-42"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("AssumeRoleWithWebIdentity (-want +got):\n%s", diff)
			}
			c := out.Credentials
			sm := smClient(t, url, staticCreds(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken))
			if _, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("shared")}); err != nil {
				t.Errorf("GetSecretValue with web identity credentials: %v", err)
			}
		})
	}

	// The JWKS was fetched once, plus one refetch for the unknown kid.
	if n := fetches.Load(); n != 2 {
		t.Errorf("JWKS fetches = %d, want 2 (cached, one refetch for an unknown key id)", n)
	}
	for _, r := range s.Requests() {
		if r.Action != "AssumeRoleWithWebIdentity" {
			continue
		}
		if r.AccessKeyID != "" || r.Params["WebIdentityToken"] != "<redacted>" {
			t.Errorf("recorded %s: AccessKeyID %q, token %v; want unsigned and redacted", r.Action, r.AccessKeyID, r.Params["WebIdentityToken"])
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestWebIdentityRoleProvider runs the SDK's own web identity provider, the
// way a delegate with an OIDC connector uses it.
func TestWebIdentityRoleProvider(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, signingKID)
	jwksURL, _ := jwksServer(t, key.publicSet())
	s, url := mustStart(t, awsemu.Options{
		Roles:         map[string]awsemu.Role{oidcRole: {}},
		OIDCProviders: map[string]awsemu.OIDCProvider{issuer: {ClientIDs: []string{stsAud}, JWKSURL: jwksURL}},
	})
	s.PutSecretDirect("shared", "v", nil)
	retriever := tokenFunc(func() ([]byte, error) { return []byte(key.sign(t, claimsFor(issuer, stsAud, time.Minute))), nil })
	provider := stscreds.NewWebIdentityRoleProvider(stsClient(t, url, aws.AnonymousCredentials{}), oidcRole, retriever,
		func(o *stscreds.WebIdentityRoleOptions) { o.RoleSessionName = "delegate-web" })
	sm := smClient(t, url, aws.NewCredentialsCache(provider))
	for range 3 {
		if _, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("shared")}); err != nil {
			t.Fatalf("GetSecretValue: %v", err)
		}
	}
	if n := s.Calls("sts.AssumeRoleWithWebIdentity"); n != 1 {
		t.Errorf("Calls(sts.AssumeRoleWithWebIdentity) = %d, want 1", n)
	}
}

type tokenFunc func() ([]byte, error)

func (f tokenFunc) GetIdentityToken() ([]byte, error) { return f() }
