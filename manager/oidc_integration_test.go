package manager_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// taskTokenClaims is the payload of a manager-minted task token.
type taskTokenClaims struct {
	jwt.Claims
	Account   string            `json:"account"`
	Org       string            `json:"org"`
	Project   string            `json:"project"`
	Connector string            `json:"connector"`
	TaskID    string            `json:"task_id"`
	Context   map[string]string `json:"context"`
}

// unverifiedClaims decodes a JWT's payload without checking its signature:
// for tokens the test did not receive but the emulator's STS recorded.
func unverifiedClaims(t *testing.T, raw string) taskTokenClaims {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("ParseSigned: %v", err)
	}
	var c taskTokenClaims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatalf("decode token claims: %v", err)
	}
	return c
}

// oidcEnv is a manager serving its issuer over HTTP and an AWS emulator
// that trusts it through the jwks_uri of its discovery document.
type oidcEnv struct {
	srv    *manager.Server
	issuer string
	jwks   jose.JSONWebKeySet
	emu    *awsemu.Server
	emuURL string
	clock  *emuClock
}

func mustOIDCEnv(t *testing.T, tweak func(*manager.Config)) *oidcEnv {
	t.Helper()
	srv := mustManager(t, func(c *manager.Config) {
		c.HTTPListen = "127.0.0.1:0"
		c.Platform.Endpoints.Allow = testEndpoints // the emulator, for platform tasks
		if tweak != nil {
			tweak(c)
		}
	})
	e := &oidcEnv{srv: srv, issuer: "http://" + srv.HTTPAddr(), clock: &emuClock{}}
	var doc discovery
	getJSON(t, e.issuer+"/.well-known/openid-configuration", &doc)
	if doc.Issuer != e.issuer {
		t.Fatalf("discovery issuer = %q, want %q", doc.Issuer, e.issuer)
	}
	if want := e.issuer + "/.well-known/jwks.json"; doc.JWKSURI != want {
		t.Fatalf("discovery jwks_uri = %q, want %q", doc.JWKSURI, want)
	}
	getJSON(t, doc.JWKSURI, &e.jwks)
	e.emu, e.emuURL = mustEmu(t, awsemu.Options{
		Region: emuRegion,
		Roles:  map[string]awsemu.Role{emuRoleARN: {}},
		OIDCProviders: map[string]awsemu.OIDCProvider{
			e.issuer: {ClientIDs: []string{"sts.amazonaws.com"}, JWKSURL: doc.JWKSURI},
		},
		Now: e.clock.now,
	})
	return e
}

// oidcConnector is an OIDC connector on the emulator.
func (e *oidcEnv) oidcConnector(scope *delegatev1.Scope, id string, mode delegatev1.OIDCConnectivity, selectors ...string) *delegatev1.Connector {
	return &delegatev1.Connector{
		Identifier: id, Name: id, Scope: scope,
		CredentialType: delegatev1.CredentialType_OIDC, OidcConnectivity: mode,
		RoleArn: emuRoleARN, Region: emuRegion,
		EndpointUrl: e.emuURL, StsEndpointUrl: e.emuURL,
		DelegateSelectors: selectors,
	}
}

// assumeWithToken calls AssumeRoleWithWebIdentity on the emulator with tok,
// directly through the SDK (no smdelegate code on the path).
func (e *oidcEnv) assumeWithToken(t *testing.T, tok string) error {
	t.Helper()
	client := sts.New(sts.Options{
		Region:           emuRegion,
		BaseEndpoint:     aws.String(e.emuURL),
		Credentials:      aws.AnonymousCredentials{},
		RetryMaxAttempts: 1,
	})
	_, err := client.AssumeRoleWithWebIdentity(t.Context(), &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          aws.String(emuRoleARN),
		RoleSessionName:  aws.String("direct-test"),
		WebIdentityToken: aws.String(tok),
	})
	return err
}

// recordingSTS is a reverse proxy to the STS endpoint target that keeps
// the WebIdentityToken of every request (the emulator records it
// redacted). It returns the proxy's URL and a function listing the tokens.
func recordingSTS(t *testing.T, target string) (string, func() []string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards tokens
	var tokens []string
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("WebIdentityToken") != "" {
			mu.Lock()
			tokens = append(tokens, form.Get("WebIdentityToken"))
			mu.Unlock()
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(tokens)
	}
}

// awsCode is the AWS error code of err, or "" when it is not an AWS error.
func awsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// stsRequests returns the AssumeRoleWithWebIdentity requests emu received.
func stsRequests(emu *awsemu.Server) []awsemu.Request {
	return slices.DeleteFunc(emu.Requests(), func(r awsemu.Request) bool {
		return r.Service != "sts" || r.Action != "AssumeRoleWithWebIdentity"
	})
}

// TestOIDCConnectorTokenAcceptedByAWS proves design §6's oidc credentials
// end to end: AWS (the emulator's STS) trusts the manager as an issuer
// through its discovery document and JWKS served over HTTP, accepts the
// token the manager minted for the task, and the secret is read with the
// role's credentials. The token the delegate received verifies against the
// published JWKS with the expected issuer, audience, subject and a short
// lifetime; a token signed by another key, a tampered one, and the real one
// once expired are refused.
func TestOIDCConnectorTokenAcceptedByAWS(t *testing.T) {
	t.Parallel()
	e := mustOIDCEnv(t, nil)
	const secretValue = "oidc-secret-value-7f3a"
	e.emu.PutSecretDirect("payments/db", secretValue, nil)

	if len(e.jwks.Keys) == 0 {
		t.Fatal("JWKS has no keys")
	}
	active := e.srv.Issuer().ActiveKeyID()
	if len(e.jwks.Key(active)) != 1 {
		t.Fatalf("JWKS does not publish the active key %q: %v", active, e.jwks.Keys)
	}
	for _, k := range e.jwks.Keys {
		if !k.IsPublic() {
			t.Errorf("JWKS key %q is not public-only", k.KeyID)
		}
	}

	var mu sync.Mutex // guards tokens
	var tokens []string
	startSecretAgent(t, e.srv.Addr(), "oidc-agent", []string{"aws"}, testLogger(t), func(_ context.Context, task *delegatev1.Task) {
		mu.Lock()
		tokens = append(tokens, task.GetPayload().GetSecret().GetConnector().GetWebIdentityToken())
		mu.Unlock()
	})
	c, ctx := operator(t, e.srv.Addr())
	waitDelegates(t, c, ctx, 1)

	scope := &delegatev1.Scope{Account: "acme", Org: "payments"}
	conn := e.oidcConnector(scope, "aws_oidc", delegatev1.OIDCConnectivity_DELEGATE, "aws")
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: conn}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
	ref := &delegatev1.ConnectorRef{Scope: scope, Identifier: "aws_oidc"}
	info := secretGet(t, c, ctx, ref, "payments/db")
	o := info.GetOutcome()
	if o.GetCode() != delegatev1.Code_OK {
		t.Fatalf("Secret(get) code = %v (%s), want OK", o.GetCode(), o.GetMessage())
	}
	if got := o.GetSecret().GetValue().GetStringValue(); got != secretValue {
		t.Errorf("Secret(get) value = %q, want %q", got, secretValue)
	}
	if info.GetDelegate() != "oidc-agent" {
		t.Errorf("Secret(get) ran on %q, want oidc-agent", info.GetDelegate())
	}

	// STS was asked, by the delegate, and the read used the role's
	// temporary credentials.
	reqs := stsRequests(e.emu)
	if len(reqs) != 1 {
		t.Fatalf("AssumeRoleWithWebIdentity calls = %d, want 1", len(reqs))
	}
	if got := reqs[0].Params["RoleSessionName"]; got != "oidc-agent" {
		t.Errorf("RoleSessionName = %v, want oidc-agent (the delegate's name)", got)
	}
	for _, r := range e.emu.Requests() {
		if r.Action == "GetSecretValue" && !strings.HasPrefix(r.AccessKeyID, "ASIA") {
			t.Errorf("GetSecretValue signed with %q, want temporary (ASIA...) role credentials", r.AccessKeyID)
		}
	}

	mu.Lock()
	if len(tokens) != 1 || tokens[0] == "" {
		mu.Unlock()
		t.Fatalf("the delegate received tokens %d (%v), want one", len(tokens), tokens)
	}
	raw := tokens[0]
	mu.Unlock()

	// The token verifies against the JWKS served over HTTP.
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("ParseSigned(task token): %v", err)
	}
	kid := tok.Headers[0].KeyID
	keys := e.jwks.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("token kid %q is not in the JWKS", kid)
	}
	var claims taskTokenClaims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("token does not verify with JWKS key %q: %v", kid, err)
	}
	wantSub := "account:acme:org:payments:connector:aws_oidc"
	if err := claims.ValidateWithLeeway(jwt.Expected{
		Issuer: e.issuer, Subject: wantSub, AnyAudience: jwt.Audience{"sts.amazonaws.com"}, Time: time.Now(),
	}, 0); err != nil {
		t.Errorf("token claims %+v: %v", claims.Claims, err)
	}
	if claims.Expiry == nil || claims.IssuedAt == nil {
		t.Fatalf("token lacks exp or iat: %+v", claims.Claims)
	}
	if life := claims.Expiry.Time().Sub(claims.IssuedAt.Time()); life <= 0 || life > 5*time.Minute {
		t.Errorf("token lifetime = %s, want short (0 < life <= 5m, the default token_ttl)", life)
	}
	if !claims.Expiry.Time().After(time.Now()) {
		t.Errorf("token expiry %s is not in the future", claims.Expiry.Time())
	}
	if claims.Account != "acme" || claims.Org != "payments" || claims.Connector != "aws_oidc" || claims.TaskID != info.GetId() {
		t.Errorf("token claims account/org/connector/task_id = %q/%q/%q/%q, want acme/payments/aws_oidc/%s",
			claims.Account, claims.Org, claims.Connector, claims.TaskID, info.GetId())
	}
	wantContext := map[string]string{"operation": "secret.get", "connectivity": "delegate"}
	if diff := cmp.Diff(wantContext, claims.Context); diff != "" {
		t.Errorf("token context claim (-want +got):\n%s", diff)
	}

	// The same token, given straight to STS, is accepted (so the refusals
	// below are about what was changed, nothing else).
	if err := e.assumeWithToken(t, raw); err != nil {
		t.Fatalf("AssumeRoleWithWebIdentity(real token) = %v, want success", err)
	}

	t.Run("signed by another key", func(t *testing.T) {
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: other},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		forged, err := jwt.Signed(signer).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.assumeWithToken(t, forged); awsCode(err) != "InvalidIdentityToken" {
			t.Errorf("AssumeRoleWithWebIdentity(token signed by another key) = %v, want InvalidIdentityToken", err)
		}
	})

	t.Run("tampered claims", func(t *testing.T) {
		parts := strings.Split(raw, ".")
		changed := claims
		changed.Subject = "account:acme:org:payments:connector:someone_else"
		payload, err := json.Marshal(changed)
		if err != nil {
			t.Fatal(err)
		}
		parts[1] = base64.RawURLEncoding.EncodeToString(payload)
		if err := e.assumeWithToken(t, strings.Join(parts, ".")); awsCode(err) != "InvalidIdentityToken" {
			t.Errorf("AssumeRoleWithWebIdentity(tampered token) = %v, want InvalidIdentityToken", err)
		}
	})

	t.Run("expired", func(t *testing.T) {
		// AWS's clock moves past the token's expiry.
		e.clock.advance(time.Until(claims.Expiry.Time()) + time.Second)
		if err := e.assumeWithToken(t, raw); awsCode(err) != "ExpiredTokenException" {
			t.Errorf("AssumeRoleWithWebIdentity(expired token) = %v, want ExpiredTokenException", err)
		}
	})
}

// TestPlatformConnectorRunsWithoutDelegates proves oidc_connectivity
// PLATFORM: with no agent connected the manager runs the connector's tasks
// itself (sync reads and persisted mutations), as the reserved platform
// delegate, exchanging its own token at STS; and the platform never runs
// anything else: a ping without selectors, or a DELEGATE-mode OIDC
// connector's task, fails NO_ELIGIBLE_DELEGATE after the queue timeout.
func TestPlatformConnectorRunsWithoutDelegates(t *testing.T) {
	t.Parallel()
	const queueTimeout = 300 * time.Millisecond
	e := mustOIDCEnv(t, func(c *manager.Config) { c.Dispatch.QueueTimeout = config.Duration(queueTimeout) })
	const secretValue = "platform-secret-value-91c2"
	e.emu.PutSecretDirect("platform/db", secretValue, nil)
	c, ctx := operator(t, e.srv.Addr())
	var stsTokens func() []string

	scope := &delegatev1.Scope{Account: "acme"}
	conn := e.oidcConnector(scope, "aws_platform", delegatev1.OIDCConnectivity_PLATFORM)
	conn.StsEndpointUrl, stsTokens = recordingSTS(t, e.emuURL)
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: conn}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
	ref := &delegatev1.ConnectorRef{Scope: scope, Identifier: "aws_platform"}

	info := secretGet(t, c, ctx, ref, "platform/db")
	if o := info.GetOutcome(); o.GetCode() != delegatev1.Code_OK {
		t.Fatalf("Secret(get) code = %v (%s), want OK", o.GetCode(), o.GetMessage())
	}
	if got := info.GetOutcome().GetSecret().GetValue().GetStringValue(); got != secretValue {
		t.Errorf("Secret(get) value = %q, want %q", got, secretValue)
	}
	if info.GetDelegate() != manager.PlatformTag {
		t.Errorf("Secret(get) delegate = %q, want %q", info.GetDelegate(), manager.PlatformTag)
	}
	if !slices.Equal(info.GetSelectors(), []string{manager.PlatformTag}) {
		t.Errorf("Secret(get) selectors = %q, want [%s]", info.GetSelectors(), manager.PlatformTag)
	}
	reqs := stsRequests(e.emu)
	if len(reqs) != 1 {
		t.Fatalf("AssumeRoleWithWebIdentity calls = %d, want 1", len(reqs))
	}
	if got := reqs[0].Params["RoleSessionName"]; got != "smd-manager" {
		t.Errorf("RoleSessionName = %v, want smd-manager", got)
	}
	tokens := stsTokens()
	if len(tokens) != 1 {
		t.Fatalf("web identity tokens sent to STS = %d, want 1", len(tokens))
	}
	claims := unverifiedClaims(t, tokens[0])
	if diff := cmp.Diff(map[string]string{"operation": "secret.get", "connectivity": "platform"}, claims.Context); diff != "" {
		t.Errorf("platform token context claim (-want +got):\n%s", diff)
	}
	if claims.TaskID != info.GetId() || claims.Subject != "account:acme:connector:aws_platform" {
		t.Errorf("platform token task_id %q sub %q, want %s and account:acme:connector:aws_platform", claims.TaskID, claims.Subject, info.GetId())
	}

	// A mutation is persisted and run by the platform too.
	created, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Async: true,
		Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{
			Name: "platform/new", Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "v1"}}}}})
	if err != nil {
		t.Fatalf("Secret(create, async): %v", err)
	}
	final := waitTask(t, c, ctx, created.GetId(), 10*time.Second)
	if final.GetState() != delegatev1.TaskState_SUCCEEDED || final.GetDelegate() != manager.PlatformTag {
		t.Errorf("create task = %v on %q (%s), want SUCCEEDED on %s", final.GetState(), final.GetDelegate(),
			final.GetOutcome().GetMessage(), manager.PlatformTag)
	}
	if _, ok := e.emu.Secret("platform/new"); !ok {
		t.Error("the platform's create did not reach AWS")
	}

	// The platform delegate is not an agent: it is not listed.
	if r, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{}); err != nil || len(r.GetDelegates()) != 0 {
		t.Errorf("ListDelegates = %v, %v; want none (the platform is not listed)", r.GetDelegates(), err)
	}

	t.Run("ping without selectors", func(t *testing.T) {
		start := time.Now()
		info := ping(t, c, ctx, &delegatev1.PingRequest{})
		if got := info.GetOutcome().GetCode(); got != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
			t.Fatalf("Ping() with no agents code = %v on %q, want NO_ELIGIBLE_DELEGATE", got, info.GetDelegate())
		}
		if took := time.Since(start); took < queueTimeout {
			t.Errorf("Ping() failed after %s, before the queue timeout of %s", took, queueTimeout)
		}
		if msg := info.GetOutcome().GetMessage(); !strings.Contains(msg, "no delegates are connected") {
			t.Errorf("Ping() message = %q, want it to say no delegates are connected", msg)
		}
	})

	t.Run("delegate-mode oidc connector", func(t *testing.T) {
		dconn := e.oidcConnector(scope, "aws_delegated", delegatev1.OIDCConnectivity_DELEGATE)
		if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: dconn}); err != nil {
			t.Fatalf("CreateConnector: %v", err)
		}
		info := secretGet(t, c, ctx, &delegatev1.ConnectorRef{Scope: scope, Identifier: "aws_delegated"}, "platform/db")
		if got := info.GetOutcome().GetCode(); got != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
			t.Errorf("Secret(get) through a delegate-mode connector with no agents = %v on %q, want NO_ELIGIBLE_DELEGATE",
				got, info.GetDelegate())
		}
	})
}
