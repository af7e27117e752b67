package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Credentials the instance metadata mock serves. ec2-metadata-mock's default
// role credentials carry a session token and expired in 2020; the emulator
// accepts session tokens only for the sessions its own STS issued
// (AddCredentials registers long-term keys), so the test overrides them
// with a long-term key pair, no token and a future expiry.
const (
	imdsKeyID  = "AKIAIMDSMOCK00000001"
	imdsSecret = "imds/secret/PLANTEDIMDS0000000000000000"
)

// findMetadataMock locates AWS's ec2-metadata-mock: PATH, then GOBIN, then
// GOPATH/bin. It is a required test tool (scripts/tools.sh installs it).
func findMetadataMock(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("ec2-metadata-mock"); err == nil {
		return p
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(string(out), "\n") // GOBIN's line may be empty
		if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
			dirs = append(dirs, strings.TrimSpace(lines[0]))
		}
		if len(lines) > 1 {
			for _, gp := range filepath.SplitList(strings.TrimSpace(lines[1])) {
				dirs = append(dirs, filepath.Join(gp, "bin"))
			}
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "ec2-metadata-mock")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	t.Fatalf("ec2-metadata-mock not found on PATH, in GOBIN or in GOPATH/bin (looked in %v): run scripts/tools.sh to install it", dirs)
	return ""
}

// startMetadataMock runs ec2-metadata-mock on a free loopback port and
// returns its base URL once it answers.
func startMetadataMock(t *testing.T) string {
	t.Helper()
	bin := findMetadataMock(t)
	dir := t.TempDir()
	cfg := map[string]any{"metadata": map[string]any{"values": map[string]any{
		"iam-security-credentials": map[string]any{
			"Code": "Success", "LastUpdated": "2024-01-01T00:00:00Z", "Type": "AWS-HMAC",
			"AccessKeyId": imdsKeyID, "SecretAccessKey": imdsSecret, "Token": "",
			"Expiration": time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339),
		},
	}}}
	b, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "aemm.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := closedAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(bin, "-n", host, "-p", port, "-c", cfgPath)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "aemm.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	url := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := imdsGet(url, "/latest/meta-data/iam/security-credentials/"); err == nil {
			return url
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "aemm.log"))
			t.Fatalf("ec2-metadata-mock did not answer on %s within 10s; its log:\n%s", url, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// imdsGet reads a metadata path with an IMDSv2 session token.
func imdsGet(base, path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	req.Header.Set("X-aws-ec2-metadata-token", string(tok))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
	}
	return string(body), nil
}

// instanceRoleEnv starts ec2-metadata-mock, points the SDK default chain
// at it (IMDSv2; no key in the environment), and returns an env whose
// emulator knows exactly the key the mock serves. It uses t.Setenv: its
// tests are not parallel.
func instanceRoleEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	mock := startMetadataMock(t)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", mock)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "false")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")

	// Register with the emulator exactly what the mock serves.
	role, err := imdsGet(mock, "/latest/meta-data/iam/security-credentials/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := imdsGet(mock, "/latest/meta-data/iam/security-credentials/"+strings.TrimSpace(role))
	if err != nil {
		t.Fatal(err)
	}
	var served struct{ AccessKeyId, SecretAccessKey, Token string }
	if err := json.Unmarshal([]byte(body), &served); err != nil {
		t.Fatalf("decode the mock's role credentials: %v", err)
	}
	if served.AccessKeyId != imdsKeyID || served.SecretAccessKey != imdsSecret {
		t.Fatalf("the mock serves key %q, want the configured %q and its secret", served.AccessKeyId, imdsKeyID)
	}
	e := newEnv(t, opts)
	e.emu.AddCredentials(served.AccessKeyId, served.SecretAccessKey)
	return e
}

// TestInstanceRoleOperations runs every operation with an INSTANCE_ROLE
// connector whose credentials come from the SDK default chain reaching
// ec2-metadata-mock over IMDSv2 (t.Setenv: not parallel).
func TestInstanceRoleOperations(t *testing.T) {
	e := instanceRoleEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_INSTANCE_ROLE)
	exerciseOps(t, e, conn)
	signers := signingKeys(e)
	if len(signers) != 1 || !signers[imdsKeyID] {
		t.Errorf("secretsmanager calls signed by %v, want only the instance role key %s", signers, imdsKeyID)
	}
	if n := e.emu.Calls("sts.AssumeRole"); n != 0 {
		t.Errorf("sts.AssumeRole calls = %d, want 0", n)
	}
}

// TestInstanceRoleLogsNeverHoldSecrets is TestLogsAndMessagesNeverHoldSecrets
// for INSTANCE_ROLE: every operation, successful and failing, at debug
// level, with the role credentials ec2-metadata-mock serves; then the same
// credentials refused by AWS (the emulator now holds another secret for
// the key, so every signature fails). Neither the planted value nor the
// instance role's secret key may reach a log line or a message.
func TestInstanceRoleLogsNeverHoldSecrets(t *testing.T) {
	e := instanceRoleEnv(t, envOptions{maxAttempts: 1})
	conn := e.connector(t, delegatev1.CredentialType_INSTANCE_ROLE)
	conn.SecretNamePrefix = "scan-instance_role"
	messages := scanOps(t, e, conn)
	generated := generatedValues(t, e, conn)
	if signers := signingKeys(e); len(signers) != 1 || !signers[imdsKeyID] {
		t.Fatalf("secretsmanager calls signed by %v, want only the instance role key %s: the scan would not cover it", signers, imdsKeyID)
	}

	e.emu.AddCredentials(imdsKeyID, "not/the/secret/the/metadata/service/serves")
	bad := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	bad.Id += "-bad" // a new client: the chain reads IMDS again
	out := e.run(t, "scan-bad-instance-role", getTask(bad, "s"))
	if out.GetCode() != delegatev1.Code_CREDENTIALS {
		t.Errorf("refused instance role credentials: outcome %v %q, want CREDENTIALS", out.GetCode(), out.GetMessage())
	}
	messages = append(messages, out.GetMessage())
	assertNoneHeld(t, e, messages, append([]string{plantedValue, imdsSecret, baseSecret}, generated...))
}
