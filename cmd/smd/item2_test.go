package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/harness"
	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// recorder is an HTTP listener of the test's own, in front of the AWS
// emulator: it keeps every request it receives, headers and body, and
// passes it on.
type item2Recorder struct {
	URL string
	mu  sync.Mutex // guards raw
	raw [][]byte
}

func startRecorder(t *testing.T, target string) *item2Recorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := &item2Recorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dump, err := httputil.DumpRequest(r, true) // restores r.Body
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rec.mu.Lock()
		rec.raw = append(rec.raw, dump)
		rec.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

func (r *item2Recorder) requests() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.raw...)
}

// holding reports how many recorded requests hold any of planted.
func (r *item2Recorder) holding(planted ...string) int {
	n := 0
	for _, raw := range r.requests() {
		for _, p := range planted {
			if bytes.Contains(raw, []byte(p)) {
				n++
				break
			}
		}
	}
	return n
}

// item2Manager starts an in-process manager on 127.0.0.1 with one
// delegate token and one operator token.
func item2Manager(t *testing.T, delegateToken, operatorToken string) *manager.Server {
	t.Helper()
	cfg := manager.DefaultConfig()
	cfg.Listen, cfg.HTTPListen, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.TLS.Insecure = true
	cfg.MasterKey = bytes.Repeat([]byte{7}, 32)
	cfg.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken(delegateToken)}}
	cfg.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken(operatorToken)}}
	cfg.Dispatch.QueueTimeout = config.Duration(10 * time.Second)
	cfg.Dispatch.TaskDeadline = config.Duration(20 * time.Second)
	cfg.ShutdownTimeout = config.Duration(time.Second)
	srv, err := manager.New(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// item2Agent writes yaml to dir/NAME.yaml, loads it as `smd agent -c`
// does and runs that agent, with the task handler smd agent wires, until
// the test ends. Its log goes to logs.
func item2Agent(t *testing.T, dir, name, yaml string, logs *harness.LogBuffer) {
	t.Helper()
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var o agentFlags
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	o.register(fs)
	if err := fs.Parse([]string{"-c", path}); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config(fs)
	if err != nil {
		t.Fatalf("agent %s config: %v", name, err)
	}
	cfg.Reconnect.Initial, cfg.Reconnect.Max = config.Duration(20*time.Millisecond), config.Duration(200*time.Millisecond)
	log := zerolog.New(logs).Level(zerolog.DebugLevel).With().Str("delegate", name).Logger()
	h, err := newTaskHandler(cfg, log)
	if err != nil {
		t.Fatalf("agent %s handler: %v", name, err)
	}
	a := agent.New(cfg, log, h, "test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestItem2AgentRefusesHostReferencesAndEndpoints performs issue 9 item 2
// against real agents (config file, smd agent's wiring, the real runner
// and pool): an operator who may create connectors writes one whose
// access_key_id is file:<the agent's token file> or env:<a variable of
// the delegate host>, and whose endpoint_url is a listener of the
// attacker's (here the test's own), since SigV4 puts the access key id in
// clear in the Authorization header.
//
// Each refused task fails naming the agent config key to change, and the
// listener receives no request holding the token or the planted
// material; with the allow-lists set, the same references and endpoint
// work (and the listener then does see the planted key id: the positive
// control that it would have seen a leak). No refusal quotes file content.
func TestItem2AgentRefusesHostReferencesAndEndpoints(t *testing.T) {
	dir := t.TempDir()
	credDir := filepath.Join(dir, "creds")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		t.Fatal(err)
	}
	delegateToken, operatorToken := "smdd_item2_"+ids.Random(), "smdo_item2_"+ids.Random()
	const plantedKeyID, plantedSecret = "AKIAPLANTEDFILE0ITEM2", "planted/secret/ITEM2env0000000000000000"
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(dir, "agent.token")
	write(tokenFile, delegateToken+"\n")
	keyFile := filepath.Join(credDir, "key-id")
	write(keyFile, plantedKeyID+"\n")
	tokenCopy := filepath.Join(credDir, "token-copy")
	write(tokenCopy, "token="+delegateToken+"\n")
	tokenLink := filepath.Join(credDir, "agent-link")
	if err := os.Symlink(tokenFile, tokenLink); err != nil {
		t.Fatal(err)
	}
	tokenHardLink := filepath.Join(credDir, "agent-hardlink")
	if err := os.Link(tokenFile, tokenHardLink); err != nil {
		t.Fatal(err)
	}

	emu := awsemu.New(awsemu.Options{Credentials: map[string]string{plantedKeyID: plantedSecret}})
	emuURL, err := emu.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	emu.PutSecretDirect("item2-db", "the-value", nil)
	listener := startRecorder(t, emuURL)
	srv := item2Manager(t, delegateToken, operatorToken)

	// Three delegate hosts. refs-denied allows the listener but no
	// reference; endpoint-denied the references but no endpoint; open
	// both, with globs that also match its own token and config files.
	logs := &harness.LogBuffer{}
	base := "manager: " + srv.Addr() + "\ntoken_file: " + tokenFile + "\ntls: {insecure: true}\nconcurrency: 4\n"
	item2Agent(t, dir, "refs-denied", base+"name: refs-denied\ntags: [refs-denied]\nendpoints: {allow: ['"+listener.URL+"']}\n", logs)
	item2Agent(t, dir, "endpoint-denied", base+"name: endpoint-denied\ntags: [endpoint-denied]\n"+
		"references: {allow_env: ['ITEM2_*'], allow_files: ['"+credDir+"/*']}\n", logs)
	item2Agent(t, dir, "open", base+"name: open\ntags: [open]\nendpoints: {allow: ['"+listener.URL+"']}\n"+
		"references: {allow_env: ['ITEM2_*', '*TOKEN*'], allow_files: ['"+dir+"/*', '"+credDir+"/*']}\n", logs)
	openConfig := filepath.Join(dir, "open.yaml")

	// The host's environment, set after the agents read their config.
	t.Setenv("ITEM2_SECRET", plantedSecret)
	t.Setenv("ITEM2_KEY_ID", plantedKeyID)
	t.Setenv("ITEM2_TOKEN_COPY", delegateToken)
	t.Setenv("SMD_TOKEN", delegateToken)

	cf := clientFlags{manager: srv.Addr(), token: operatorToken, insecure: true}
	conn, ctx, err := cf.dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := delegatev1.NewManagerServiceClient(conn)
	waitFor(t, "three delegates connected", func() bool {
		r, err := api.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
		return err == nil && len(r.GetDelegates()) == 3
	})

	get := func(t *testing.T, id, on, accessKeyID, secretKey string) *delegatev1.Outcome {
		t.Helper()
		c := &delegatev1.Connector{
			Identifier: id, Name: id, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: accessKeyID, SecretAccessKey: secretKey, Region: "us-east-1",
			EndpointUrl: listener.URL, StsEndpointUrl: listener.URL, DelegateSelectors: []string{on},
		}
		if _, err := api.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: c}); err != nil {
			t.Fatalf("CreateConnector(%s): %v", id, err)
		}
		info, err := api.Secret(ctx, &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: id},
			Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: "item2-db"}}})
		if err != nil {
			t.Fatalf("Secret(get) on %s: %v", id, err)
		}
		if info.GetDelegate() != on {
			t.Fatalf("Secret(get) on %s ran on %q, want %q", id, info.GetDelegate(), on)
		}
		return info.GetOutcome()
	}
	file := func(p string) string { return "file:" + p }

	for _, tc := range []struct {
		name, on, keyID, secret string
		code                    delegatev1.Code
		want, want2             string // in the message
	}{
		{"token file, no reference allowed", "refs-denied", file(tokenFile), "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"connector.access_key_id: file:", " is refused: the agent's config does not allow it (references.allow_files)"},
		{"planted file, no reference allowed", "refs-denied", file(keyFile), "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"(references.allow_files)", ""},
		{"planted variable, no reference allowed", "refs-denied", "env:ITEM2_KEY_ID", "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"connector.access_key_id: env:ITEM2_KEY_ID is refused: the agent's config does not allow it (references.allow_env)", ""},
		{"allowed references, endpoint not allowed", "endpoint-denied", file(keyFile), "env:ITEM2_SECRET", delegatev1.Code_INVALID_ARGUMENT,
			"connector.endpoint_url: " + listener.URL + " is refused: it is not an AWS Secrets Manager endpoint and the agent's config does not allow it (endpoints.allow)", ""},
		{"token file matched by a glob", "open", file(tokenFile), "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"is refused: it is the host's own token, key or config file", ""},
		{"config file matched by a glob", "open", file(openConfig), "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"is refused: it is the host's own token, key or config file", ""},
		{"symbolic link to the token file", "open", file(tokenLink), "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"is refused: it is the host's own token, key or config file", ""},
		{"hard link to the token file", "open", file(tokenHardLink), "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"is refused: it is the host's own token, key or config file", ""},
		{"a copy of the token", "open", file(tokenCopy), "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"connector.access_key_id: file:", "-copy is refused: it holds the host's own token"},
		{"the token in an allowed variable", "open", "env:ITEM2_TOKEN_COPY", "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"env:ITEM2_TOKEN_COPY is refused: it holds the host's own token", ""},
		{"SMD_TOKEN matched by a pattern", "open", "env:SMD_TOKEN", "env:ITEM2_SECRET", delegatev1.Code_CREDENTIALS,
			"env:SMD_TOKEN is refused: SMD_* variables configure smd itself", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "x" + strings.ToLower(ids.Random()[:12])
			o := get(t, id, tc.on, tc.keyID, tc.secret)
			if o.GetCode() != tc.code || !strings.Contains(o.GetMessage(), tc.want) || !strings.Contains(o.GetMessage(), tc.want2) {
				t.Errorf("get = %v %q, want %v with %q and %q", o.GetCode(), o.GetMessage(), tc.code, tc.want, tc.want2)
			}
			for _, p := range []string{delegateToken, plantedKeyID, plantedSecret} {
				if strings.Contains(o.GetMessage(), p) {
					t.Errorf("the refusal quotes planted material: %q", o.GetMessage())
				}
			}
		})
	}
	if got := len(listener.requests()); got != 0 {
		t.Errorf("the listener received %d requests from refused connectors, want none", got)
	}

	// The same references and endpoint, allowed by the open host: the get
	// works, signed with the planted key id, through the listener.
	o := get(t, "allowed_refs", "open", file(keyFile), "env:ITEM2_SECRET")
	if o.GetCode() != delegatev1.Code_OK || o.GetSecret().GetValue().GetStringValue() != "the-value" {
		t.Fatalf("get with allowed references and endpoint = %v %q, want OK and the value", o.GetCode(), o.GetMessage())
	}
	if n := listener.holding(plantedKeyID); n == 0 {
		t.Errorf("the listener saw no request signed with the planted key id: the control failed")
	}
	if n := listener.holding(delegateToken); n != 0 {
		t.Errorf("%d requests at the listener hold the agent's token", n)
	}
	if bytes.Contains(logs.Bytes(), []byte(delegateToken)) {
		t.Errorf("the agents' log holds the agent's token")
	}
}

// waitFor polls cond every 20 ms for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
