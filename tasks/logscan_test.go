package tasks_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/tasks"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// plantedValue is the secret value the log scans write and read; jsonValue
// holds it under a JSON key.
const plantedValue = "PLANTED-VALUE-d41d8cd98f00b204"

var jsonValue = `{"password":"` + plantedValue + `","n":1}`

// TestLogsAndMessagesNeverHoldSecrets runs every operation, successful and
// failing, for every remote credential type at debug level, with a planted
// secret value and planted credentials, and scans every log line and every
// outcome message for them, and for every role session the emulator's STS
// issued. The instance-role run is TestInstanceRoleLogsNeverHoldSecrets.
func TestLogsAndMessagesNeverHoldSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{maxAttempts: 1})

	var messages []string
	var forbidden = []string{plantedValue, connKeyID, connSecret, baseSecret, externalID}
	for _, ct := range []delegatev1.CredentialType{
		delegatev1.CredentialType_ACCESS_KEY,
		delegatev1.CredentialType_ASSUME_ROLE,
		delegatev1.CredentialType_OIDC,
	} {
		conn := e.connector(t, ct)
		conn.SecretNamePrefix = "scan-" + strings.ToLower(ct.String())
		if ct == delegatev1.CredentialType_OIDC {
			forbidden = append(forbidden, conn.GetWebIdentityToken())
		}
		messages = append(messages, scanOps(t, e, conn)...)
		forbidden = append(forbidden, generatedValues(t, e, conn)...)
		// Credential failures that carry the planted material.
		bad := proto.Clone(conn).(*delegatev1.ConnectorSettings)
		bad.Id += "-bad" // a new identity: no cached credentials
		switch ct {
		case delegatev1.CredentialType_ACCESS_KEY:
			bad.SecretAccessKey = valueRef(connSecret + "-wrong")
		case delegatev1.CredentialType_ASSUME_ROLE:
			bad.ExternalId = externalID + "-wrong" // STS AccessDenied naming the base key's user
		case delegatev1.CredentialType_OIDC:
			other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			bad.WebIdentityToken = signToken(t, other, testIssuer(t).url, "intruder")
			forbidden = append(forbidden, bad.WebIdentityToken)
		}
		out := e.run(t, "scan-bad-"+ct.String(), getTask(bad, "s"))
		if out.GetCode() != delegatev1.Code_CREDENTIALS {
			t.Errorf("bad %s credentials: outcome %v %q, want CREDENTIALS", ct, out.GetCode(), out.GetMessage())
		}
		messages = append(messages, out.GetMessage())
	}
	// The role sessions the emulator's STS issued (one assume-role, one
	// web identity) are credentials too, every part of them.
	sessions := e.emu.IssuedSessions()
	if len(sessions) < 2 {
		t.Fatalf("the emulator issued %d role sessions, want at least 2 (assume_role and oidc): the scan would miss them", len(sessions))
	}
	for _, s := range sessions {
		forbidden = append(forbidden, s.AccessKeyID, s.SecretAccessKey, s.SessionToken)
	}
	assertNoneHeld(t, e, messages, forbidden)
}

// generatedValues returns the values GetRandomPassword made for scanOps
// on conn (the secrets gen-*), failing the test when there are none.
func generatedValues(t *testing.T, e *env, conn *delegatev1.ConnectorSettings) []string {
	t.Helper()
	var out []string
	for _, name := range []string{"gen-a", "gen-b"} {
		st, ok := e.emu.Secret(conn.GetSecretNamePrefix() + "/" + name)
		if !ok || len(st.Versions) == 0 || st.Versions[0].SecretString == "" {
			t.Fatalf("scanOps made no generated secret %s: the scan would miss its value", name)
		}
		out = append(out, st.Versions[0].SecretString)
	}
	return out
}

// scanOps runs every operation on conn, successful and failing (AWS
// faults injected on the first call of some), and returns the outcome
// messages and the connection test's check messages. It also plants an
// unmanaged secret holding the planted value and has changes to it
// refused, adopted and forced, and generates passwords (gen-a, gen-b) to
// scan for (generatedValues).
func scanOps(t *testing.T, e *env, conn *delegatev1.ConnectorSettings) []string {
	t.Helper()
	force := true
	putConn := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	putConn.UsePutSecretValue = true
	e.emu.PutSecretDirect(conn.GetSecretNamePrefix()+"/theirs", plantedValue, map[string]string{"managed-by": "someone"})
	adopt, forced := delegatev1.Unmanaged_UNMANAGED_ADOPT, delegatev1.Unmanaged_UNMANAGED_FORCE
	gen := &delegatev1.GeneratePassword{Length: 40}
	ops := []struct {
		fault string // AWS error code injected on the op's first call
		task  *delegatev1.SecretTask
	}{
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "s", Value: str(jsonValue), Tags: map[string]string{"k": "v"}}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "s", Value: str(jsonValue + " ")}}}}, // ALREADY_EXISTS
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s#password"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s#missing"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s#password.deeper"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "s", Value: str(plantedValue + "-2")}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "s", Value: str(plantedValue + "-3")}}}},
		{"", &delegatev1.SecretTask{Connector: putConn, Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "s", Value: str(plantedValue + "-4"), Description: "d"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Describe{Describe: &delegatev1.DescribeSecretOp{Name: "s"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_List{List: &delegatev1.ListSecretsOp{}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_TestConnection{TestConnection: &delegatev1.TestConnectionOp{}}}},
		{"InvalidParameterException", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "s", Value: str(plantedValue + "-5")}}}},
		{"AccessDeniedException", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s"}}}},
		{"ThrottlingException", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "t", Value: str(plantedValue)}}}},
		{"InternalServiceError", &delegatev1.SecretTask{Connector: putConn, Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "s", Value: str(plantedValue + "-6")}}}},
		{"UnrecognizedClientException", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s"}}}},
		{"BrandNewException", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "u", Value: str(plantedValue)}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "bad name", Value: str(plantedValue)}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "s"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "s"}}}}, // SCHEDULED_FOR_DELETION
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Restore{Restore: &delegatev1.RestoreSecretOp{Name: "s"}}}},
		{"", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "s", ForceDeleteWithoutRecovery: &force}}}},
		// Generated values, returned and not; their failures.
		{"", secretTask(conn, &delegatev1.CreateSecretOp{Name: "gen-a", Generate: gen})},
		{"", secretTask(conn, &delegatev1.CreateSecretOp{Name: "gen-b", Generate: gen, ReturnValue: true})},
		{"", secretTask(conn, &delegatev1.GetSecretOp{Name: "gen-b"})},
		{"AccessDeniedException", secretTask(conn, &delegatev1.CreateSecretOp{Name: "gen-c", Generate: gen, ReturnValue: true})},
		{"ResourceExistsException", secretTask(conn, &delegatev1.CreateSecretOp{Name: "gen-d", Generate: gen, ReturnValue: true})},
		{"", secretTask(conn, &delegatev1.CreateSecretOp{Name: "gen-a", Generate: gen, ReturnValue: true})}, // ALREADY_EXISTS
		// Versions and tags.
		{"", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "gen-b", IncludeDeprecated: true})},
		{"InternalServiceError", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "gen-b"})},
		{"", secretTask(conn, &delegatev1.TagSecretOp{Name: "gen-b", Add: map[string]string{"team": "a"}, Remove: []string{"x"}})},
		{"AccessDeniedException", secretTask(conn, &delegatev1.TagSecretOp{Name: "gen-b", Add: map[string]string{"team": "b"}})},
		// A secret smdelegate does not manage: refused, then adopted, forced.
		{"", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "theirs", Value: str(plantedValue + "-7")})},
		{"", secretTask(conn, &delegatev1.TagSecretOp{Name: "theirs", Remove: []string{"managed-by"}})},
		{"", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "theirs"})},
		{"", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "theirs", Value: str(plantedValue + "-8"), Unmanaged: forced})},
		{"AccessDeniedException", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "theirs", Value: str(plantedValue + "-9"), Unmanaged: adopt})},
		{"", secretTask(conn, &delegatev1.UpsertSecretOp{Name: "theirs", Value: str(plantedValue + "-10"), Unmanaged: adopt})},
		{"", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "theirs", ForceDeleteWithoutRecovery: &force})},
	}
	var messages []string
	for i, op := range ops {
		if op.fault != "" {
			e.emu.FailNext("", 1, op.fault)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out := e.runner.Run(tasks.WithAttempt(ctx, 1), "scan-"+conn.GetId()+"-"+string(rune('a'+i)), op.task)
		cancel()
		messages = append(messages, out.GetMessage())
		for _, c := range out.GetSecret().GetChecks() {
			messages = append(messages, c.GetMessage())
		}
	}
	return messages
}

// assertNoneHeld fails the test for every forbidden string found in a line
// of e's log or in one of messages. It first checks that debug logging and
// AWS failures happened, without which the scan proves nothing.
func assertNoneHeld(t *testing.T, e *env, messages, forbidden []string) {
	t.Helper()
	logs := e.logs.String()
	if !strings.Contains(logs, `"level":"debug"`) || !strings.Contains(logs, "aws call failed") {
		t.Fatalf("debug logging did not happen; the scan would prove nothing:\n%s", logs)
	}
	for _, f := range forbidden {
		if f == "" {
			t.Fatal("an empty forbidden string would match everything")
		}
		for i, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, f) {
				t.Errorf("log line %d holds planted material %q: %s", i, f, line)
			}
		}
		for _, m := range messages {
			if strings.Contains(m, f) {
				t.Errorf("outcome message holds planted material %q: %s", f, m)
			}
		}
	}
}
