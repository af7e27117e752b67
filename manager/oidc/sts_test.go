package oidc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/manager/oidc"
)

const roleARN = "arn:aws:iam::123456789012:role/smd-oidc"

// isolateAWS keeps the host's AWS configuration out of the SDK.
func isolateAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
	for _, v := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
		"AWS_STS_REGIONAL_ENDPOINTS", "AWS_DEFAULT_REGION"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// tokenFunc lets a Mint call feed stscreds as the delegate's token source.
type tokenFunc func() ([]byte, error)

func (f tokenFunc) GetIdentityToken() ([]byte, error) { return f() }

// TestAssumeRoleWithWebIdentity has the STS emulator, trusting the issuer
// through the jwks_uri of its discovery document, accept a minted token
// through the real SDK over HTTP (as the delegate's
// stscreds.WebIdentityRoleProvider does), and refuse tokens signed by
// another key or expired.
func TestAssumeRoleWithWebIdentity(t *testing.T) {
	isolateAWS(t)
	e := mustEnv(t, oidc.Options{})
	var doc discovery
	getJSON(t, e.srv.URL+"/.well-known/openid-configuration", &doc)

	emu := awsemu.New(awsemu.Options{
		Roles: map[string]awsemu.Role{roleARN: {}},
		OIDCProviders: map[string]awsemu.OIDCProvider{
			doc.Issuer: {ClientIDs: []string{"sts.amazonaws.com"}, JWKSURL: doc.JWKSURI},
		},
	})
	stsURL, err := emu.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("awsemu Start: %v", err)
	}
	t.Cleanup(func() { emu.Close() })
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	if err != nil {
		t.Fatalf("LoadDefaultConfig: %v", err)
	}
	client := sts.NewFromConfig(cfg, func(o *sts.Options) {
		o.BaseEndpoint = aws.String(stsURL)
		o.RetryMaxAttempts = 1
	})

	claims := oidc.Claims{Account: "acme", Org: "payments", Connector: "aws_prod", TaskID: "t-9"}
	good := mustMint(t, e.iss, claims)

	// Another issuer claiming the same URL, with its own key.
	other := mustIssuer(t, newFakeKeyStore(), mustSealer(t), oidc.Options{IssuerURL: e.srv.URL, Now: e.clock.Now})
	// An impostor that reuses the real kid with a key of its own.
	impostor := signWith(t, e.iss.ActiveKeyID(), jwt.Claims{
		Issuer: e.srv.URL, Subject: "account:acme:connector:aws_prod", Audience: jwt.Audience{"sts.amazonaws.com"},
		IssuedAt: jwt.NewNumericDate(time.Now()), Expiry: jwt.NewNumericDate(time.Now().Add(5 * time.Minute)),
	})
	// The same key and issuer, but a clock an hour behind: expired on arrival.
	past := mustIssuer(t, e.ks, e.sealer, oidc.Options{IssuerURL: e.srv.URL, Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if past.ActiveKeyID() != e.iss.ActiveKeyID() {
		t.Fatalf("an issuer on the same store has key %q, want %q", past.ActiveKeyID(), e.iss.ActiveKeyID())
	}
	// A token for another audience.
	wrongAud := mustIssuer(t, e.ks, e.sealer, oidc.Options{IssuerURL: e.srv.URL, Audience: "someone-else", Now: e.clock.Now})

	tests := []struct {
		name     string
		token    string
		wantCode string
		wantType any
	}{
		{"minted", good, "", nil},
		{"signed by another issuer's key", mustMint(t, other, claims), "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
		{"signed by another key with the active kid", impostor, "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
		{"expired", mustMint(t, past, claims), "ExpiredTokenException", new(*ststypes.ExpiredTokenException)},
		{"wrong audience", mustMint(t, wrongAud, claims), "InvalidIdentityToken", new(*ststypes.InvalidIdentityTokenException)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := client.AssumeRoleWithWebIdentity(t.Context(), &sts.AssumeRoleWithWebIdentityInput{
				RoleArn: aws.String(roleARN), RoleSessionName: aws.String("task-t-9"), WebIdentityToken: aws.String(tt.token)})
			var apiErr smithy.APIError
			code := ""
			if errors.As(err, &apiErr) {
				code = apiErr.ErrorCode()
			}
			if code != tt.wantCode || (tt.wantCode == "" && err != nil) {
				t.Fatalf("AssumeRoleWithWebIdentity = %v, want code %q", err, tt.wantCode)
			}
			if tt.wantType != nil && !errors.As(err, tt.wantType) {
				t.Errorf("AssumeRoleWithWebIdentity error = %T, want %T", err, tt.wantType)
			}
			if err != nil && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q contains the token", err)
			}
			if err != nil {
				return
			}
			if got, want := aws.ToString(out.SubjectFromWebIdentityToken), "account:acme:org:payments:connector:aws_prod"; got != want {
				t.Errorf("SubjectFromWebIdentityToken = %q, want %q", got, want)
			}
			if got := aws.ToString(out.Audience); got != "sts.amazonaws.com" {
				t.Errorf("Audience = %q, want sts.amazonaws.com", got)
			}
			if out.Credentials == nil || aws.ToString(out.Credentials.AccessKeyId) == "" {
				t.Errorf("Credentials = %+v, want temporary credentials", out.Credentials)
			}
		})
	}

	// The delegate's path: the SDK's web identity provider with a token
	// source that mints, behind the credentials cache.
	t.Run("stscreds provider", func(t *testing.T) {
		mints := 0
		provider := aws.NewCredentialsCache(stscreds.NewWebIdentityRoleProvider(client, roleARN,
			tokenFunc(func() ([]byte, error) {
				mints++
				tok, err := e.iss.Mint(claims)
				return []byte(tok), err
			}), func(o *stscreds.WebIdentityRoleOptions) { o.RoleSessionName = "task-t-9" }))
		for range 3 {
			creds, err := provider.Retrieve(t.Context())
			if err != nil {
				t.Fatalf("Retrieve: %v", err)
			}
			if creds.AccessKeyID == "" || !creds.CanExpire {
				t.Errorf("Retrieve = %+v, want expiring role credentials", creds)
			}
		}
		if mints != 1 {
			t.Errorf("3 cached Retrieves minted %d tokens, want 1", mints)
		}
	})
}

// signWith signs claims with a fresh P-256 key under the header kid.
func signWith(t *testing.T, kid string, c jwt.Claims) string {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
