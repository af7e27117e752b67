package tasks_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"

	"google.golang.org/protobuf/proto"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func getTask(conn *delegatev1.ConnectorSettings, name string) *delegatev1.SecretTask {
	return &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: name}}}
}

func createTask(conn *delegatev1.ConnectorSettings, name, value string) *delegatev1.SecretTask {
	return &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: name, Value: str(value)}}}
}

// TestErrorCodes produces every typed outcome code from an AWS error the
// emulator returns (injected with FailNext, or arising naturally), with one
// SDK attempt so retries do not hide it.
func TestErrorCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		credType   delegatev1.CredentialType
		setup      func(e *env, conn *delegatev1.ConnectorSettings) *delegatev1.SecretTask
		want       delegatev1.Code
		retryable  bool
		msg        string
		noSMCalled bool // validation must fail before AWS is called
	}{
		{name: "not found", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			return getTask(c, "missing")
		}, want: delegatev1.Code_NOT_FOUND, msg: `secret "missing" not found`},
		{name: "not found injected", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.PutSecretDirect(prefix+"/x", "v", nil)
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "ResourceNotFoundException")
			return getTask(c, "x")
		}, want: delegatev1.Code_NOT_FOUND, msg: `secret "x" not found`},
		{name: "already exists", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.PutSecretDirect(prefix+"/x", "v", nil)
			return createTask(c, "x", "other")
		}, want: delegatev1.Code_ALREADY_EXISTS, msg: `secret "x" already exists`},
		{name: "already exists injected", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.PutSecretDirect(prefix+"/x", "v", nil)
			e.emu.FailNext("secretsmanager.CreateSecret", 1, "ResourceExistsException")
			return createTask(c, "x", "v")
		}, want: delegatev1.Code_ALREADY_EXISTS, msg: `secret "x" already exists`},
		{name: "scheduled for deletion on get", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.PutSecretDirect(prefix+"/x", "v", managedTags)
			if out := e.run(t, "del", &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "x"}}}); out.GetCode() != delegatev1.Code_OK {
				t.Fatalf("delete: %v", out)
			}
			return getTask(c, "x")
		}, want: delegatev1.Code_SCHEDULED_FOR_DELETION, msg: "restore it with `smd secret restore x` or wait until the deletion date"},
		{name: "scheduled for deletion on create", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.PutSecretDirect(prefix+"/x", "v", managedTags)
			e.run(t, "del", &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "x"}}})
			return createTask(c, "x", "v2")
		}, want: delegatev1.Code_SCHEDULED_FOR_DELETION, msg: "smd secret restore x"},
		{name: "invalid parameter", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.CreateSecret", 1, "InvalidParameterException")
			return createTask(c, "x", "v")
		}, want: delegatev1.Code_INVALID_ARGUMENT, msg: "InvalidParameterException"},
		{name: "validation", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.CreateSecret", 1, "ValidationException")
			return createTask(c, "x", "v")
		}, want: delegatev1.Code_INVALID_ARGUMENT, msg: "ValidationException"},
		{name: "access denied", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "AccessDeniedException")
			return getTask(c, "x")
		}, want: delegatev1.Code_ACCESS_DENIED, msg: "secretsmanager:GetSecretValue"},
		{name: "access denied on create", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.CreateSecret", 1, "AccessDeniedException")
			return createTask(c, "x", "v")
		}, want: delegatev1.Code_ACCESS_DENIED, msg: "secretsmanager:CreateSecret"},
		{name: "throttled", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "ThrottlingException")
			return getTask(c, "x")
		}, want: delegatev1.Code_THROTTLED, retryable: true, msg: "throttled"},
		{name: "internal service error", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "InternalServiceError")
			return getTask(c, "x")
		}, want: delegatev1.Code_UNAVAILABLE, retryable: true, msg: "unavailable"},
		{name: "service unavailable", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "ServiceUnavailable")
			return getTask(c, "x")
		}, want: delegatev1.Code_UNAVAILABLE, retryable: true},
		{name: "unrecognized client injected", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "UnrecognizedClientException")
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "UnrecognizedClientException"},
		{name: "expired token injected", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "ExpiredTokenException")
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "ExpiredTokenException"},
		{name: "unknown access key", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.AccessKeyId = valueRef("AKIAUNKNOWN000000001")
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "credentials"},
		{name: "wrong secret key", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.SecretAccessKey = valueRef("wrong/secret/PLANTEDWRONG000000000000")
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "credentials"},
		{name: "access key env unset", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.AccessKeyId = &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: "AWS_KEY_X_NOT_SET"}}
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "connector.access_key_id: env var AWS_KEY_X_NOT_SET is not set", noSMCalled: true},
		{name: "assume role denied", credType: delegatev1.CredentialType_ASSUME_ROLE, setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("sts.AssumeRole", 1, "AccessDenied")
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "could not obtain ASSUME_ROLE credentials", noSMCalled: true},
		{name: "assume role wrong external id", credType: delegatev1.CredentialType_ASSUME_ROLE, setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.ExternalId = "ext-wrong"
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "AccessDenied", noSMCalled: true},
		{name: "assume role duration over role max", credType: delegatev1.CredentialType_OIDC, setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.AssumeRoleDurationSeconds = 7200
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "MaxSessionDuration", noSMCalled: true},
		{name: "assume role duration invalid", credType: delegatev1.CredentialType_ASSUME_ROLE, setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.AssumeRoleDurationSeconds = 60
			return getTask(c, "x")
		}, want: delegatev1.Code_INVALID_ARGUMENT, msg: "connector.assume_role_duration_seconds: must be between 900 and 43200 seconds", noSMCalled: true},
		{name: "oidc token rejected", credType: delegatev1.CredentialType_OIDC, setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("sts.AssumeRoleWithWebIdentity", 1, "InvalidIdentityToken")
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "InvalidIdentityToken", noSMCalled: true},
		{name: "oidc token from an untrusted key", credType: delegatev1.CredentialType_OIDC, setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			c.WebIdentityToken = signToken(t, other, testIssuer(t).url, "intruder")
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "InvalidIdentityToken", noSMCalled: true},
		{name: "oidc without token", credType: delegatev1.CredentialType_OIDC, setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.WebIdentityToken = ""
			return getTask(c, "x")
		}, want: delegatev1.Code_CREDENTIALS, msg: "connector.web_identity_token", noSMCalled: true},
		{name: "timeout", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.SetLatency("secretsmanager.GetSecretValue", 5*time.Second)
			return getTask(c, "x")
		}, want: delegatev1.Code_TIMEOUT, msg: "deadline"},
		{name: "unreachable", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			c.EndpointUrl = "http://" + closedAddr(t)
			return getTask(c, "x")
		}, want: delegatev1.Code_UNAVAILABLE, retryable: true, msg: "could not be reached", noSMCalled: true},
		{name: "unknown aws error", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "BrandNewException")
			return getTask(c, "x")
		}, want: delegatev1.Code_INTERNAL, msg: "secretsmanager:GetSecretValue failed with AWS error code BrandNewException (HTTP 400), which smdelegate does not classify"},
		{name: "unknown operation", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "UnknownOperationException")
			return getTask(c, "x")
		}, want: delegatev1.Code_UNSUPPORTED, msg: "the endpoint does not support secretsmanager:GetSecretValue: it answered UnknownOperationException (HTTP 400)"},
		{name: "invalid name", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			return getTask(c, "bad name!")
		}, want: delegatev1.Code_INVALID_ARGUMENT, msg: "name: must be 1-512 characters of letters, digits and /_+=.@-", noSMCalled: true},
		{name: "force and window", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			force := true
			return &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "x", ForceDeleteWithoutRecovery: &force, RecoveryWindowDays: 7}}}
		}, want: delegatev1.Code_INVALID_ARGUMENT, msg: "must not be set together", noSMCalled: true},
		{name: "value too big", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			return createTask(c, "x", strings.Repeat("v", 65537))
		}, want: delegatev1.Code_INVALID_ARGUMENT, msg: "value: must be 1-65536 bytes", noSMCalled: true},
		{name: "connection test denied", setup: func(e *env, c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
			e.emu.FailNext("secretsmanager.GetSecretValue", 1, "AccessDeniedException")
			return &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_TestConnection{TestConnection: &delegatev1.TestConnectionOp{}}}
		}, want: delegatev1.Code_ACCESS_DENIED, msg: "lacks secretsmanager:GetSecretValue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{maxAttempts: 1})
			ct := tc.credType
			if ct == delegatev1.CredentialType_CREDENTIAL_TYPE_UNSPECIFIED {
				ct = delegatev1.CredentialType_ACCESS_KEY
			}
			conn := e.connector(t, ct)
			task := tc.setup(e, conn)
			before := e.emu.Requests()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if tc.want == delegatev1.Code_TIMEOUT {
				ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
			}
			defer cancel()
			out := e.runCtx(ctx, t, "task-"+tc.name, task)
			t.Logf("outcome %v retryable=%v: %s", out.GetCode(), out.GetRetryable(), out.GetMessage())
			wantCode(t, tc.name, out, tc.want, tc.msg)
			if out.GetRetryable() != tc.retryable {
				t.Errorf("retryable = %v, want %v", out.GetRetryable(), tc.retryable)
			}
			if tc.noSMCalled {
				for _, r := range e.emu.Requests()[len(before):] {
					if r.Service == "secretsmanager" {
						t.Errorf("secretsmanager.%s was called; the failure should have come first", r.Action)
					}
				}
			}
			if tc.name == "connection test denied" {
				checks := out.GetSecret().GetChecks()
				if len(checks) != 2 || !checks[0].GetOk() || checks[0].GetAction() != "secretsmanager:ListSecrets" ||
					checks[1].GetOk() || checks[1].GetAction() != "secretsmanager:GetSecretValue" {
					t.Errorf("connection test checks = %v", checks)
				}
			}
		})
	}
}

// TestCancelled: a task cancelled while AWS is answering ends CANCELLED.
func TestCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	e.emu.SetLatency("secretsmanager.GetSecretValue", 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	out := e.runCtx(ctx, t, "cancel", getTask(conn, "x"))
	wantCode(t, "cancelled get", out, delegatev1.Code_CANCELLED, "cancelled")
}

// TestRetriesBeforeSurfacing shows the SDK retrying THROTTLED and
// UNAVAILABLE (MaxAttempts 3, standard and adaptive) before the task
// reports them, and a transient fault healing within the retries.
func TestRetriesBeforeSurfacing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mode   string
		code   string
		faults int
		want   delegatev1.Code
	}{
		{"throttled surfaces", "standard", "ThrottlingException", 3, delegatev1.Code_THROTTLED},
		{"throttled heals", "standard", "ThrottlingException", 2, delegatev1.Code_OK},
		{"5xx surfaces", "standard", "InternalServiceError", 3, delegatev1.Code_UNAVAILABLE},
		{"503 heals", "standard", "ServiceUnavailable", 2, delegatev1.Code_OK},
		{"adaptive throttled surfaces", "adaptive", "ThrottlingException", 3, delegatev1.Code_THROTTLED},
		{"adaptive heals", "adaptive", "ThrottlingException", 1, delegatev1.Code_OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{maxAttempts: 3, retryMode: tc.mode})
			conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
			e.emu.PutSecretDirect(prefix+"/x", "v", nil)
			e.emu.FailNext("secretsmanager.GetSecretValue", tc.faults, tc.code)
			out := e.run(t, "retry", getTask(conn, "x"))
			wantCode(t, tc.name, out, tc.want, "")
			wantCalls := tc.faults + 1
			if tc.want != delegatev1.Code_OK {
				wantCalls = 3
				if !out.GetRetryable() || !strings.Contains(out.GetMessage(), "after 3 attempts") {
					t.Errorf("outcome %q retryable=%v, want retryable after 3 attempts", out.GetMessage(), out.GetRetryable())
				}
			}
			if got := e.emu.Calls("secretsmanager.GetSecretValue"); got != wantCalls {
				t.Errorf("GetSecretValue calls = %d, want %d", got, wantCalls)
			}
		})
	}
}

// TestEndpointEnvironment shows the SDK's own endpoint variables at work
// when the connector sets no endpoint: AWS_ENDPOINT_URL_SECRETS_MANAGER
// and AWS_ENDPOINT_URL_STS (t.Setenv: not parallel).
func TestEndpointEnvironment(t *testing.T) {
	e := newEnv(t, envOptions{})
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", e.url)
	t.Setenv("AWS_ENDPOINT_URL_STS", e.url)
	t.Setenv("AWS_ENDPOINT_URL", "http://"+closedAddr(t)) // the specific ones win
	conn := e.connector(t, delegatev1.CredentialType_ASSUME_ROLE)
	conn.EndpointUrl, conn.StsEndpointUrl = "", ""
	e.emu.PutSecretDirect(prefix+"/x", "v", nil)
	mustOK(t, "get via env endpoints", e.run(t, "env", getTask(conn, "x")))
	if e.emu.Calls("sts.AssumeRole") != 1 || e.emu.Calls("secretsmanager.GetSecretValue") != 1 {
		t.Errorf("calls: AssumeRole %d, GetSecretValue %d, want 1 and 1", e.emu.Calls("sts.AssumeRole"), e.emu.Calls("secretsmanager.GetSecretValue"))
	}

	// AWS_ENDPOINT_URL alone serves both services.
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "")
	t.Setenv("AWS_ENDPOINT_URL_STS", "")
	t.Setenv("AWS_ENDPOINT_URL", e.url)
	c2 := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	c2.Id = "conn-generic-endpoint"
	mustOK(t, "get via AWS_ENDPOINT_URL", e.run(t, "env2", getTask(c2, "x")))

	// The connector's endpoint beats the environment.
	t.Setenv("AWS_ENDPOINT_URL", "http://"+closedAddr(t))
	c3 := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	c3.Id, c3.EndpointUrl, c3.StsEndpointUrl = "conn-explicit", e.url, e.url
	mustOK(t, "get via connector endpoints", e.run(t, "env3", getTask(c3, "x")))
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
