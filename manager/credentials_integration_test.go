package manager_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/ids"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks/awsauth"
)

// assertAbsent fails for every planted value found in data, raw or
// base64-encoded (the forms a value could take in a store record or a
// JSON log line).
func assertAbsent(t *testing.T, where string, data []byte, planted map[string]string) {
	t.Helper()
	for what, v := range planted {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v))} {
			if bytes.Contains(data, []byte(form)) {
				t.Errorf("%s holds the %s in plaintext (%d bytes searched)", where, what, len(data))
				break
			}
		}
	}
}

// assertPresent is the control of assertAbsent: each of want is in data.
func assertPresent(t *testing.T, where string, data []byte, want ...string) {
	t.Helper()
	for _, w := range want {
		if !bytes.Contains(data, []byte(w)) {
			t.Errorf("%s does not hold %q: the absence checks prove nothing", where, w)
		}
	}
}

// readStore closes srv and returns the raw bytes of its bolt file.
func readStore(t *testing.T, srv interface{ Close(context.Context) error }, dir string) []byte {
	t.Helper()
	srv.Close(context.Background())
	raw, err := os.ReadFile(filepath.Join(dir, "smd.db"))
	if err != nil {
		t.Fatalf("read the store file: %v", err)
	}
	if len(raw) == 0 {
		t.Fatal("the store file is empty")
	}
	return raw
}

// TestBuiltinCredentialsNeverStoredInPlaintext proves design §5 and §8:
// a builtin credential is sealed at rest and decrypted only into the task,
// the value of a persisted secret mutation is sealed with the task, and
// neither appears in the raw store file or in the manager's log; while
// env: and file: references are resolved on the delegate's host only, so
// the manager never holds their values at all.
func TestBuiltinCredentialsNeverStoredInPlaintext(t *testing.T) {
	t.Parallel()

	t.Run("builtin", func(t *testing.T) {
		t.Parallel()
		// Values unique to this run, so that a hit cannot be a coincidence.
		keyID := "AKIAPLANTED" + ids.Random()[:8]
		planted := map[string]string{
			"builtin credential": "planted-cred-" + ids.Random(),
			"secret value":       "planted-secret-" + ids.Random(),
		}
		emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: planted["builtin credential"]}})

		dir := t.TempDir()
		log, logs := bufferLogger(t)
		srv := mustManagerAt(t, dir, log, nil)
		agentLog, agentLogs := bufferLogger(t)
		var mu sync.Mutex // guards sent
		var sent []*delegatev1.ConnectorSettings
		startSecretAgent(t, srv.Addr(), "builtin-agent", nil, agentLog, func(_ context.Context, task *delegatev1.Task) {
			mu.Lock()
			sent = append(sent, task.GetPayload().GetSecret().GetConnector())
			mu.Unlock()
		})
		c, ctx := operator(t, srv.Addr())
		waitDelegates(t, c, ctx, 1)

		if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{
			Name: "aws_secret", Value: []byte(planted["builtin credential"]),
		}); err != nil {
			t.Fatalf("PutCredential: %v", err)
		}
		creds, err := c.ListCredentials(ctx, &delegatev1.ListCredentialsRequest{})
		if err != nil || len(creds.GetCredentials()) != 1 || creds.GetCredentials()[0].GetName() != "aws_secret" {
			t.Fatalf("ListCredentials = %v, %v; want aws_secret", creds.GetCredentials(), err)
		}
		if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
			Identifier: "aws_keys", Name: "keys", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: keyID, SecretAccessKey: "builtin:aws_secret",
			Region: emuRegion, EndpointUrl: emuURL, StsEndpointUrl: emuURL,
		}}); err != nil {
			t.Fatalf("CreateConnector: %v", err)
		}
		ref := &delegatev1.ConnectorRef{Identifier: "aws_keys"}

		created, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Async: true,
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{
				Name: "planted/secret", Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: planted["secret value"]}}}}})
		if err != nil {
			t.Fatalf("Secret(create, async): %v", err)
		}
		if final := waitTask(t, c, ctx, created.GetId(), 10*time.Second); final.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Fatalf("create task = %v (%s), want SUCCEEDED", final.GetState(), final.GetOutcome().GetMessage())
		}
		if _, ok := emu.Secret("planted/secret"); !ok {
			t.Fatal("the create did not reach AWS")
		}
		// A sync read of the value goes through the manager too.
		info := secretGet(t, c, ctx, ref, "planted/secret")
		if v := info.GetOutcome().GetSecret().GetValue().GetStringValue(); v != planted["secret value"] {
			t.Fatalf("Secret(get) = %q (%s), want the planted value", v, info.GetOutcome().GetMessage())
		}
		for _, r := range emu.Requests() {
			if r.Service == "secretsmanager" && r.AccessKeyID != keyID {
				t.Errorf("%s signed with %q, want %q", r.Action, r.AccessKeyID, keyID)
			}
		}
		mu.Lock()
		for i, s := range sent {
			if s.GetSecretAccessKey().GetValue() != planted["builtin credential"] {
				t.Errorf("task %d: the delegate did not receive the decrypted builtin credential", i)
			}
		}
		mu.Unlock()

		raw := readStore(t, srv, dir)
		assertAbsent(t, "the store file", raw, planted)
		assertAbsent(t, "the manager's log", logs.Bytes(), planted)
		assertAbsent(t, "the agent's log", agentLogs.Bytes(), planted)
		// Controls: the search would see a plaintext string. The connector,
		// with its plaintext access key id, is stored as is, and the
		// manager logged the connector's creation.
		assertPresent(t, "the store file", raw, keyID, "builtin:aws_secret")
		assertPresent(t, "the manager's log", logs.Bytes(), "aws_keys")
	})

	t.Run("env and file references", func(t *testing.T) {
		t.Parallel()
		keyID := "AKIAENVREF" + ids.Random()[:8]
		secretKey := "file-secret-key-" + ids.Random()
		planted := map[string]string{"access key id": keyID, "secret access key": secretKey}
		emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: secretKey}})

		// The delegate's host: a variable and a file. This process hosts the
		// manager too, so what is checked is that the manager never read
		// them: it sends references, and its store and log never hold them.
		// Not SMD_*: references never read smd's own variables.
		envVar := "TEST_KEY_ID_" + ids.Random()[:8]
		os.Setenv(envVar, keyID) // unique name: safe beside parallel tests
		t.Cleanup(func() { os.Unsetenv(envVar) })
		keyFile := filepath.Join(t.TempDir(), "aws-secret-key")
		if err := os.WriteFile(keyFile, []byte(secretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}

		dir := t.TempDir()
		log, logs := bufferLogger(t)
		srv := mustManagerAt(t, dir, log, nil)
		var mu sync.Mutex // guards sent
		var sent []*delegatev1.ConnectorSettings
		// The delegate's host allows exactly that variable and file.
		acfg := agent.DefaultConfig()
		acfg.Manager, acfg.Token, acfg.TLS.Insecure, acfg.Name, acfg.Concurrency = srv.Addr(), delegateToken, true, "ref-agent", 4
		runTestAgent(t, acfg, testLogger(t), secretTasksWith("ref-agent", testLogger(t), awsauth.PolicyConfig{
			AllowEndpoints: testEndpoints, AllowEnv: []string{envVar}, AllowFiles: []string{keyFile},
		}), func(_ context.Context, task *delegatev1.Task) {
			mu.Lock()
			sent = append(sent, task.GetPayload().GetSecret().GetConnector())
			mu.Unlock()
		})
		c, ctx := operator(t, srv.Addr())
		waitDelegates(t, c, ctx, 1)

		if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
			Identifier: "aws_refs", Name: "refs", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: "env:" + envVar, SecretAccessKey: "file:" + keyFile,
			Region: emuRegion, EndpointUrl: emuURL,
		}}); err != nil {
			t.Fatalf("CreateConnector: %v", err)
		}
		ref := &delegatev1.ConnectorRef{Identifier: "aws_refs"}
		created, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Async: true,
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{
				Name: "refs/secret", Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "v"}}}}})
		if err != nil {
			t.Fatalf("Secret(create, async): %v", err)
		}
		if final := waitTask(t, c, ctx, created.GetId(), 10*time.Second); final.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Fatalf("create task = %v (%s), want SUCCEEDED", final.GetState(), final.GetOutcome().GetMessage())
		}
		if info := secretGet(t, c, ctx, ref, "refs/secret"); info.GetOutcome().GetCode() != delegatev1.Code_OK {
			t.Fatalf("Secret(get) = %v (%s), want OK", info.GetOutcome().GetCode(), info.GetOutcome().GetMessage())
		}

		signed := 0
		for _, r := range emu.Requests() {
			if r.Service == "secretsmanager" {
				if r.AccessKeyID != keyID {
					t.Errorf("%s signed with %q, want %q (from the delegate's environment)", r.Action, r.AccessKeyID, keyID)
				}
				signed++
			}
		}
		if signed < 2 {
			t.Errorf("Secrets Manager calls = %d, want the create and the get", signed)
		}
		mu.Lock()
		if len(sent) != 2 {
			t.Errorf("tasks the delegate ran = %d, want 2", len(sent))
		}
		for i, s := range sent {
			if s.GetAccessKeyId().GetEnv() != envVar || s.GetSecretAccessKey().GetFile() != keyFile {
				t.Errorf("task %d carried access_key_id %v and secret_access_key %v, want references env:%s and file:%s",
					i, s.GetAccessKeyId(), s.GetSecretAccessKey(), envVar, keyFile)
			}
		}
		mu.Unlock()

		raw := readStore(t, srv, dir)
		assertAbsent(t, "the store file", raw, planted)
		assertAbsent(t, "the manager's log", logs.Bytes(), planted)
		assertPresent(t, "the store file", raw, "env:"+envVar, "file:"+keyFile)
		assertPresent(t, "the manager's log", logs.Bytes(), "aws_refs")
	})
}
