package tasks_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/harness"
	"github.com/smdelegate/smdelegate/tasks"
	"github.com/smdelegate/smdelegate/tasks/awsauth"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Identities the emulator knows. The base key is the delegate's own
// identity in the default chain (env vars set in TestMain); assume-role
// connectors sign AssumeRole with it.
const (
	region        = "us-east-1"
	baseKeyID     = "AKIABASEDELEGATE0001"
	baseSecret    = "base/delegate/secret/PLANTEDBASE0000000000"
	connKeyID     = "AKIACONNECTOR0000001"
	connSecret    = "connector/secret/PLANTEDCONN00000000000"
	roleARN       = "arn:aws:iam::123456789012:role/smd-test-role"
	oidcRoleARN   = "arn:aws:iam::123456789012:role/smd-test-oidc"
	externalID    = "ext-PLANTED-1234"
	prefix        = "devops"
	delegateName  = "test delegate/01" // sanitized to test-delegate-01
	oidcAudience  = "sts.amazonaws.com"
	emptyFilePath = "/nonexistent/aws"
)

// TestMain isolates the package from the host's AWS environment once for
// every test, so the tests that do not change the environment can run in
// parallel: no shared config or credentials files, no profile, no region,
// no endpoint overrides, no IMDS, and the delegate's own identity set to
// the emulator's base key.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tasks-test-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			os.Unsetenv(k)
		}
	}
	os.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Setenv("AWS_ACCESS_KEY_ID", baseKeyID)
	os.Setenv("AWS_SECRET_ACCESS_KEY", baseSecret)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// oidcIssuer is a test OIDC issuer: an ES256 key and its JWKS served on
// 127.0.0.1, the way the manager serves its own.
type oidcIssuer struct {
	url string
	key *ecdsa.PrivateKey
}

var (
	issuerOnce sync.Once
	issuer     *oidcIssuer
)

func testIssuer(t testing.TB) *oidcIssuer {
	t.Helper()
	issuerOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: string(jose.ES256), Use: "sig"}}}
		body, err := json.Marshal(jwks)
		if err != nil {
			panic(err)
		}
		// Shared by the whole package run; the process exit closes it.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}))
		issuer = &oidcIssuer{url: srv.URL, key: key}
	})
	return issuer
}

// token mints an ID token as the manager would for one task.
func (o *oidcIssuer) token(t testing.TB, subject string) string {
	t.Helper()
	return signToken(t, o.key, o.url, subject)
}

func signToken(t testing.TB, key *ecdsa.PrivateKey, iss, subject string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	raw, err := jwt.Signed(sig).Claims(jwt.Claims{
		Issuer:   iss,
		Subject:  subject,
		Audience: jwt.Audience{oidcAudience},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(5 * time.Minute)),
		ID:       fmt.Sprint(now.UnixNano()),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// env is one emulator, one pool and one runner, logging to a buffer.
type env struct {
	emu    *awsemu.Server
	url    string
	runner *tasks.Runner
	logs   *harness.LogBuffer
}

type envOptions struct {
	maxAttempts int
	retryMode   string
	emuNow      func() time.Time // the emulator's clock; default time.Now
	// policy is the host's policy; nil: testPolicy.
	policy *awsauth.PolicyConfig
}

// testPolicy is what these tests need from a host: the emulator's
// endpoints (any loopback port) and the unset variable the error tests
// name.
var testPolicy = awsauth.PolicyConfig{
	AllowEndpoints: []string{"http://127.0.0.1:*"},
	AllowEnv:       []string{"AWS_KEY_X_NOT_SET"},
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	iss := testIssuer(t)
	emu := awsemu.New(awsemu.Options{
		Region:      region,
		Credentials: map[string]string{baseKeyID: baseSecret, connKeyID: connSecret},
		Roles: map[string]awsemu.Role{
			roleARN:     {ExternalID: externalID, MaxSessionDuration: 12 * time.Hour},
			oidcRoleARN: {MaxSessionDuration: time.Hour},
		},
		OIDCProviders: map[string]awsemu.OIDCProvider{
			iss.url: {ClientIDs: []string{oidcAudience}, JWKSURL: iss.url},
		},
		Now: opts.emuNow,
	})
	url, err := emu.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	logs := &harness.LogBuffer{}
	pc := testPolicy
	if opts.policy != nil {
		pc = *opts.policy
	}
	policy, err := awsauth.NewPolicy(pc)
	if err != nil {
		t.Fatal(err)
	}
	pool := awsauth.NewPool(awsauth.PoolOptions{
		Policy:      policy,
		SessionName: delegateName,
		MaxAttempts: opts.maxAttempts,
		RetryMode:   opts.retryMode,
		MaxBackoff:  5 * time.Millisecond,
	})
	return &env{
		emu:    emu,
		url:    url,
		logs:   logs,
		runner: tasks.NewRunner(tasks.RunnerOptions{Logger: zerolog.New(logs).Level(zerolog.DebugLevel), Pool: pool}),
	}
}

// connector returns settings for one credential type against the emulator.
func (e *env) connector(t testing.TB, ct delegatev1.CredentialType) *delegatev1.ConnectorSettings {
	c := &delegatev1.ConnectorSettings{
		Id:               "conn-" + strings.ToLower(ct.String()),
		Region:           region,
		SecretNamePrefix: prefix,
		CredentialType:   ct,
		EndpointUrl:      e.url,
		StsEndpointUrl:   e.url,
	}
	switch ct {
	case delegatev1.CredentialType_ACCESS_KEY:
		c.AccessKeyId = valueRef(connKeyID)
		c.SecretAccessKey = valueRef(connSecret)
	case delegatev1.CredentialType_ASSUME_ROLE:
		c.RoleArn, c.ExternalId, c.AssumeRoleDurationSeconds = roleARN, externalID, 900
	case delegatev1.CredentialType_OIDC:
		c.RoleArn = oidcRoleARN
		c.WebIdentityToken = testIssuer(t).token(t, "account/acme/connector/"+c.Id)
	}
	return c
}

// managedTags marks a secret made with PutSecretDirect as one smdelegate
// manages, so that changes to it are allowed.
var managedTags = map[string]string{tasks.DefaultManagedByTagKey: tasks.ManagedByValue}

func valueRef(v string) *delegatev1.SecretRef {
	return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: v}}
}

func str(s string) *delegatev1.SecretValue {
	return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: s}}
}

func (e *env) run(t testing.TB, taskID string, task *delegatev1.SecretTask) *delegatev1.Outcome {
	t.Helper()
	return e.runCtx(context.Background(), t, taskID, task)
}

func (e *env) runCtx(ctx context.Context, t testing.TB, taskID string, task *delegatev1.SecretTask) *delegatev1.Outcome {
	t.Helper()
	out := e.runner.Run(ctx, taskID, task)
	if out == nil {
		t.Fatalf("Run(%s) returned nil", taskID)
	}
	return out
}

// mustOK fails the test unless out is OK and returns its result.
func mustOK(t testing.TB, what string, out *delegatev1.Outcome) *delegatev1.SecretResult {
	t.Helper()
	if out.GetCode() != delegatev1.Code_OK {
		t.Fatalf("%s: outcome %v %q, want OK", what, out.GetCode(), out.GetMessage())
	}
	return out.GetSecret()
}

func wantCode(t testing.TB, what string, out *delegatev1.Outcome, code delegatev1.Code, msgPart string) {
	t.Helper()
	if out.GetCode() != code {
		t.Fatalf("%s: outcome %v %q, want %v", what, out.GetCode(), out.GetMessage(), code)
	}
	if msgPart != "" && !strings.Contains(out.GetMessage(), msgPart) {
		t.Errorf("%s: message %q, want it to contain %q", what, out.GetMessage(), msgPart)
	}
}

// lastRequest returns the last recorded secretsmanager request of action.
func (e *env) lastRequest(t testing.TB, action string) awsemu.Request {
	t.Helper()
	reqs := e.emu.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Service == "secretsmanager" && reqs[i].Action == action {
			return reqs[i]
		}
	}
	t.Fatalf("no secretsmanager.%s request recorded", action)
	return awsemu.Request{}
}

func param(r awsemu.Request, key string) string {
	s, _ := r.Params[key].(string)
	return s
}
