package manager_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/platform"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/harness"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
	"github.com/smdelegate/smdelegate/tasks/awsauth"
)

// TestMain keeps the host's AWS configuration out of every SDK client the
// package's tests build (the agents' pools and the manager's platform
// runner), once for the process: t.Setenv would forbid t.Parallel.
func TestMain(m *testing.M) {
	isolateAWSEnv()
	m.Run()
}

// isolateAWSEnv points shared config and credentials at files that do not
// exist, clears the variables the SDK's default chain and endpoint
// resolution read, and turns off EC2 instance metadata.
func isolateAWSEnv() {
	none := filepath.Join(os.TempDir(), "smd-manager-test-no-aws-config")
	os.Setenv("AWS_CONFIG_FILE", filepath.Join(none, "config"))
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(none, "credentials"))
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, v := range []string{
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_CA_BUNDLE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
		"AWS_STS_REGIONAL_ENDPOINTS",
	} {
		os.Unsetenv(v)
	}
}

const (
	emuRegion  = "us-east-1"
	emuRoleARN = "arn:aws:iam::123456789012:role/smd-oidc"
)

// bufferLogger logs everything, debug included, to a buffer the test can
// search (and to the test log too when SMD_TEST_LOG is set).
func bufferLogger(t testing.TB) (zerolog.Logger, *harness.LogBuffer) {
	buf := &harness.LogBuffer{}
	var w io.Writer = buf
	if os.Getenv("SMD_TEST_LOG") != "" {
		w = io.MultiWriter(buf, zerolog.NewTestWriter(t))
	}
	return zerolog.New(w).Level(zerolog.DebugLevel).With().Timestamp().Logger(), buf
}

// mustManagerAt is mustManager with the data directory and logger chosen
// by the test, so that a manager can be restarted on the same store and
// its log searched. It is closed when the test ends (closing it earlier
// is fine: Close may be called twice).
func mustManagerAt(t testing.TB, dir string, log zerolog.Logger, tweak func(*manager.Config)) *manager.Server {
	t.Helper()
	cfg := manager.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.HTTPListen = ""
	cfg.DataDir = dir
	cfg.TLS.Insecure = true
	cfg.MasterKey = testMasterKey
	cfg.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken(delegateToken)}}
	cfg.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken(operatorToken)}}
	cfg.Dispatch.LeaseDuration = config.Duration(2 * time.Second)
	cfg.Dispatch.HeartbeatInterval = config.Duration(200 * time.Millisecond)
	cfg.Dispatch.QueueTimeout = config.Duration(5 * time.Second)
	cfg.Dispatch.TaskDeadline = config.Duration(20 * time.Second)
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := manager.New(cfg, log, nil)
	if err != nil {
		t.Fatalf("manager.New: %v", err)
	}
	runner, err := platform.New(cfg.Platform.Endpoints.Allow, log)
	if err != nil {
		t.Fatalf("platform.New: %v", err)
	}
	srv.SetPlatform(runner)
	if err := srv.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// secretRunner adapts tasks.Runner to agent.SecretRunner, as cmd/smd does.
type secretRunner struct{ r *tasks.Runner }

func (s secretRunner) Run(ctx context.Context, t *delegatev1.Task, st *delegatev1.SecretTask) *delegatev1.Outcome {
	return s.r.Run(tasks.WithAttempt(ctx, t.GetAttempt()), t.GetId(), st)
}

// startSecretAgent is startAgent with a handler that runs secret tasks
// through the real tasks runner and AWS client pool, logging to log.
func startSecretAgent(t testing.TB, addr, name string, tags []string, log zerolog.Logger, onRun func(context.Context, *delegatev1.Task)) *recorder {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Manager = addr
	cfg.Token = delegateToken
	cfg.TLS.Insecure = true
	cfg.Name = name
	cfg.Tags = tags
	cfg.Concurrency = 4
	return runTestAgent(t, cfg, log, secretTasks(name, log), onRun)
}

// secretTasks runs pings and, through the real tasks runner and AWS
// client pool, secret tasks, on a host that allows the emulators'
// endpoints (testEndpoints) and no env: or file: reference.
func secretTasks(name string, log zerolog.Logger) *agent.TaskHandler {
	return secretTasksWith(name, log, awsauth.PolicyConfig{AllowEndpoints: testEndpoints})
}

// testEndpoints allows the emulators these tests start on 127.0.0.1:0.
var testEndpoints = []string{"http://127.0.0.1:*"}

// secretTasksWith is secretTasks on a host with policy pc.
func secretTasksWith(name string, log zerolog.Logger, pc awsauth.PolicyConfig) *agent.TaskHandler {
	policy, err := awsauth.NewPolicy(pc)
	if err != nil {
		panic(err) // a test's own constant policy
	}
	pool := awsauth.NewPool(awsauth.PoolOptions{SessionName: name, MaxAttempts: 1, Policy: policy})
	runner := tasks.NewRunner(tasks.RunnerOptions{Logger: log, Pool: pool})
	return &agent.TaskHandler{Name: name, Version: "test", Secrets: secretRunner{runner}}
}

// emuClock is awsemu's clock, which a test can move forward.
type emuClock struct{ offset atomic.Int64 }

func (c *emuClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *emuClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// mustEmu starts an AWS emulator with opts until the test ends and returns
// it with its URL.
func mustEmu(t testing.TB, opts awsemu.Options) (*awsemu.Server, string) {
	t.Helper()
	emu := awsemu.New(opts)
	u, err := emu.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("awsemu Start: %v", err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu, u
}

// discovery is the part of the OIDC discovery document the tests read.
type discovery struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// getJSON GETs url over HTTP and decodes its JSON body into v.
func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s, want 200", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q, want application/json", url, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
}

// waitTask watches an async task until it is final and returns it.
func waitTask(t testing.TB, c delegatev1.ManagerServiceClient, ctx context.Context, id string, within time.Duration) *delegatev1.TaskInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	stream, err := c.WatchTask(ctx, &delegatev1.GetTaskRequest{Id: id})
	if err != nil {
		t.Fatalf("WatchTask(%s): %v", id, err)
	}
	var last *delegatev1.TaskInfo
	for {
		info, err := stream.Recv()
		if err != nil {
			t.Fatalf("WatchTask(%s) ended before the task was final (last %v): %v", id, last, err)
		}
		last = info
		if s := info.GetState(); s == delegatev1.TaskState_SUCCEEDED || s == delegatev1.TaskState_FAILED {
			return info
		}
	}
}

// secretGet runs a sync get through the connector and returns the task.
func secretGet(t testing.TB, c delegatev1.ManagerServiceClient, ctx context.Context, ref *delegatev1.ConnectorRef, name string) *delegatev1.TaskInfo {
	t.Helper()
	info, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref,
		Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: name}}})
	if err != nil {
		t.Fatalf("Secret(get %s) error: %v", name, err)
	}
	return info
}
