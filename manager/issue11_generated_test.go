package manager_test

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/api"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// mustClusterManager starts a replica of cluster "gen" on the PostgreSQL
// database dsn (a real manager: its membership, shared queue and peer
// link, all wired by Start), logging to log.
func mustClusterManager(t *testing.T, dsn string, log zerolog.Logger) *manager.Server {
	t.Helper()
	return mustManagerAt(t, t.TempDir(), log, func(c *manager.Config) {
		c.Store.Driver, c.Store.DSN = "postgres", dsn
		c.Cluster.Name, c.Cluster.PeerToken = "gen", peerToken
		c.Cluster.BeatInterval = config.Duration(100 * time.Millisecond)
		c.Cluster.DeadAfter = config.Duration(time.Second)
		c.Cluster.PollInterval = config.Duration(200 * time.Millisecond)
	})
}

// tasksTable is the text of every row of the tasks table (bytea as hex).
func tasksTable(t *testing.T, dsn string) []byte {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT t::text FROM tasks t`)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(append(out, s...), '\n')
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Issue 11: `smd secret create --generate --show` submitted to replica A
// runs on a delegate connected to replica B; the generated value reaches
// the caller on A over the peer link, and nowhere else: no row of the
// tasks table, no log of either replica or of the agent. Attacks: an
// operator and a delegate token on PeerService.DeliverGenerated are
// refused; the peer token delivers a forged value under a lease the
// store does not hold, which never reaches the caller, and reads
// nothing (the answer is empty). When the caller's replica is gone the
// value is dropped, and a repeat of the request on B is told, in the
// outcome, that the value was stored at AWS but cannot be shown.
func TestIssue11GeneratedValueReachesCallerOnAnotherReplica(t *testing.T) {
	dsn, _ := pgtest.Database(t)
	keyID, keySecret := "AKIAGEN"+ids.Random()[:8], "gen-cred-"+ids.Random()
	emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: keySecret}})
	logA, logsA := bufferLogger(t)
	logB, logsB := bufferLogger(t)
	a := mustClusterManager(t, dsn, logA)
	b := mustClusterManager(t, dsn, logB)

	// B's agent holds each task until the test lets it run.
	started := make(chan string, 4)
	release := make(chan struct{}, 4)
	agentLog, agentLogs := bufferLogger(t)
	startSecretAgent(t, b.Addr(), "gen-b", nil, agentLog, func(ctx context.Context, task *delegatev1.Task) {
		started <- task.GetId()
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	ca, ctxA := operator(t, a.Addr())
	waitDelegates(t, ca, ctxA, 1) // B's, seen from A
	if _, err := ca.PutCredential(ctxA, &delegatev1.PutCredentialRequest{Name: "k", Value: []byte(keySecret)}); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	if _, err := ca.CreateConnector(ctxA, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
		Identifier: "gen", Name: "gen", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
		AccessKeyId: keyID, SecretAccessKey: "builtin:k", Region: emuRegion, EndpointUrl: emuURL,
		SecretNamePrefix: "app", ManagedByTagKey: "owner",
	}}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
	createReq := func(name, requestID string) *delegatev1.SecretRequest {
		return &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "gen"}, RequestId: requestID,
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: name, ReturnValue: true,
				Generate: &delegatev1.GeneratePassword{Length: 40}}}}
	}
	storedValue := func(name string) string {
		st, ok := emu.Secret("app/" + name)
		if !ok || len(st.Versions) != 1 {
			t.Fatalf("secret app/%s: %+v, %v; want one version", name, st, ok)
		}
		return st.Versions[0].SecretString
	}
	type answer struct {
		info *delegatev1.TaskInfo
		err  error
	}

	// 1. The caller on A; the task held on B's agent meanwhile.
	shownCh := make(chan answer, 1)
	go func() {
		info, err := ca.Secret(ctxA, createReq("shown", ""))
		shownCh <- answer{info, err}
	}()
	id := <-started

	// The attacks, while the caller waits.
	forged := "forged-value-" + ids.Random()
	forgedOutcome := &delegatev1.Outcome{Code: delegatev1.Code_OK, Body: &delegatev1.Outcome_Secret{Secret: &delegatev1.SecretResult{
		Name: "app/shown", Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: forged}}}}}
	pc := peerClient(t, a.Addr())
	deliver := func(header, taskID string) (*delegatev1.DeliverGeneratedResponse, error) {
		return pc.DeliverGenerated(withAuth(t, header), &delegatev1.DeliverGeneratedRequest{TaskId: taskID, LeaseId: "forged-lease", Outcome: forgedOutcome})
	}
	for _, tc := range []struct{ name, header string }{
		{"operator token", "Bearer " + operatorToken},
		{"delegate token", "Bearer " + delegateToken},
		{"no token", ""},
	} {
		if _, err := deliver(tc.header, id); status.Code(err) != codes.Unauthenticated {
			t.Errorf("DeliverGenerated with the %s = %v, want Unauthenticated", tc.name, err)
		}
	}
	// The peer token delivers (a forgery under a lease the store will
	// not hold): the answer carries nothing.
	if resp, err := deliver("Bearer "+peerToken, id); err != nil || proto.Size(resp) != 0 {
		t.Errorf("DeliverGenerated with the peer token = %v, %v; want an empty answer", resp, err)
	}
	release <- struct{}{}
	shown := <-shownCh
	if shown.err != nil || shown.info.GetOutcome().GetCode() != delegatev1.Code_OK {
		t.Fatalf("create on A = %v, %v", shown.info, shown.err)
	}
	value := storedValue("shown")
	if got := shown.info.GetOutcome().GetSecret().GetValue().GetStringValue(); got != value || len(value) != 40 {
		t.Fatalf("the caller on A got %d characters (forged: %v), want the %d-character value stored at AWS",
			len(got), got == forged, len(value))
	}
	if shown.info.GetDelegate() != "gen-b" {
		t.Errorf("the create ran on %q, want gen-b (replica B's)", shown.info.GetDelegate())
	}
	// Reading a finished task's value through the peer link: nothing
	// comes back.
	if resp, err := deliver("Bearer "+peerToken, shown.info.GetId()); err != nil || proto.Size(resp) != 0 {
		t.Errorf("DeliverGenerated of the finished task = %v, %v; want an empty answer", resp, err)
	}
	if got, err := ca.GetTask(ctxA, &delegatev1.GetTaskRequest{Id: shown.info.GetId()}); err != nil || got.GetOutcome().GetSecret().GetValue() != nil {
		t.Errorf("GetTask of the create = %v, %v; want its outcome without the value", got, err)
	}

	// 2. The caller's replica goes away while the task runs on B.
	ctxGone, cancel := context.WithCancel(ctxA)
	goneCh := make(chan error, 1)
	go func() {
		_, err := ca.Secret(ctxGone, createReq("gone", "req-gone"))
		goneCh <- err
	}()
	goneID := <-started
	cancel()
	<-goneCh
	if err := a.Close(context.Background()); err != nil {
		t.Fatalf("close replica A: %v", err)
	}
	cb, ctxB := operator(t, b.Addr())
	waitFor(t, 10*time.Second, func() bool {
		rs, err := cb.ListReplicas(ctxB, &delegatev1.ListReplicasRequest{})
		return err == nil && len(rs.GetReplicas()) == 1
	}, "replica B to see A leave")
	release <- struct{}{}
	waitFor(t, 20*time.Second, func() bool {
		info, err := cb.GetTask(ctxB, &delegatev1.GetTaskRequest{Id: goneID})
		return err == nil && info.GetState() == delegatev1.TaskState_SUCCEEDED
	}, "the create to end on B")
	// (A repeat while the task was still in B's memory would get the
	// value, as on a single manager: the same request, retried.)
	repeat, err := cb.Secret(ctxB, createReq("gone", "req-gone"))
	if err != nil {
		t.Fatalf("repeat on B: %v", err)
	}
	if repeat.GetId() != goneID || repeat.GetOutcome().GetSecret().GetValue() != nil || repeat.GetOutcome().GetMessage() != api.GeneratedNotShown {
		t.Errorf("repeat on B = task %s, outcome %v; want task %s, no value, the message %q", repeat.GetId(), repeat.GetOutcome(), goneID, api.GeneratedNotShown)
	}
	gone := storedValue("gone")
	if !strings.Contains(logsB.String(), "generated value dropped") && !strings.Contains(logsB.String(), "generated value not delivered") {
		t.Error("replica B's log does not say the value for the gone replica was dropped")
	}

	// 3. The values are nowhere but in the caller's answer.
	planted := map[string]string{"generated value": value, "second generated value": gone, "forged value": forged}
	for what, v := range map[string]string{"generated value": value, "second generated value": gone} {
		planted[what+" (hex)"] = hex.EncodeToString([]byte(v))
	}
	b.Close(context.Background())
	time.Sleep(50 * time.Millisecond) // let the last log lines land
	rows := tasksTable(t, dsn)
	assertPresent(t, "the tasks table", rows, shown.info.GetId(), goneID)
	assertAbsent(t, "the tasks table", rows, planted)
	assertAbsent(t, "replica A's log", logsA.Bytes(), planted)
	assertAbsent(t, "replica B's log", logsB.Bytes(), planted)
	assertAbsent(t, "the agent's log", agentLogs.Bytes(), planted)
}
