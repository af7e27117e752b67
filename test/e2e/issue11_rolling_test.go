package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue11RollingRestartRerunsNothing (issue 11, Done 3): three
// replicas restarted one at a time with SIGTERM, as an operator upgrading
// them would, while two agents (listing every replica) run 300 async
// creates that each hold AWS for a while. No task runs twice: every task
// succeeds at its first attempt, AWS sees each write once and holds one
// version per secret; the tasks running on a replica's streams when it
// stops are resumed by their agents on another replica, not dispatched
// again.
func TestIssue11RollingRestartRerunsNothing(t *testing.T) {
	const n = 300
	emu := awsemu.New(awsemu.Options{})
	awsURL := heldAWS(t, emu, 250*time.Millisecond)
	rs := startReplicas(t, 3, managerOpts{Lease: 3 * time.Second, Heartbeat: 500 * time.Millisecond,
		QueueTimeout: 2 * time.Minute, TaskDeadline: 3 * time.Minute})
	var addrs []string
	for _, r := range rs {
		addrs = append(addrs, r.Addr)
	}
	var agents []*proc
	for i := range 2 {
		agents = append(agents, startAgent(t, rs[0], fmt.Sprintf("roll-%d", i+1), agentOpts{
			Tags: []string{"chaos"}, Concurrency: 8, Managers: addrs, Endpoints: []string{awsURL},
		}))
	}
	balancer := startBalancer(t, addrs...)
	api := dialWaitForReady(t, balancer.Addr(), rs[0].OperatorToken)
	waitDelegates(t, api, len(agents))
	createChaosConnectors(t, rs[0], awsURL)

	ids := make([]string, n)
	for i := range n {
		req := &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: chaosConnector}, Async: true,
			RequestId: fmt.Sprintf("roll-%d", i),
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: fmt.Sprintf("roll/s%03d", i),
				Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: fmt.Sprintf("v%d", i)}}}}}
		info, err := retryUnavailable(t, func(ctx context.Context) (*delegatev1.TaskInfo, error) { return api.Secret(ctx, req) })
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		ids[i] = info.GetId()
	}

	// The rolling restart, while the tasks run: each replica in turn
	// gets SIGTERM, exits on its own, and is started again; the next
	// one waits until it serves (/readyz) and the agents are connected.
	for i, r := range rs {
		r.proc.signal(t, syscall.SIGTERM)
		if code := r.proc.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("replica %d exited %d after SIGTERM:\n%s", i, code, r.proc.log())
		}
		r.restart(t)
		waitDelegates(t, api, len(agents))
		t.Logf("replica %d restarted", i)
	}

	final := waitAllFinal(t, api, ids, 2*time.Minute)
	for _, id := range ids {
		ti := final[id]
		if ti.GetState() != delegatev1.TaskState_SUCCEEDED || ti.GetAttempt() != 1 {
			t.Errorf("task %s: %s attempt %d (%s %s), want SUCCEEDED at attempt 1",
				id, ti.GetState(), ti.GetAttempt(), ti.GetOutcome().GetCode(), ti.GetOutcome().GetMessage())
		}
	}
	if got := replayedWrites(emu); got != 0 {
		t.Errorf("%d writes reached AWS more than once: tasks ran again", got)
	}
	for i := range n {
		st, ok := emu.Secret(fmt.Sprintf("chaos/roll/s%03d", i))
		if !ok || len(st.Versions) != 1 {
			t.Errorf("secret roll/s%03d: exists %v, %d versions, want one", i, ok, len(st.Versions))
		}
	}
	// The restarts happened while tasks ran: some were resumed elsewhere.
	resumed := 0
	for _, r := range rs {
		resumed += strings.Count(r.proc.log(), "adopted the running tasks")
	}
	if resumed == 0 {
		t.Errorf("no replica adopted a running task: the restarts hit no running task, the test proved nothing")
	}
	t.Logf("rolling restart: %d tasks, all at attempt 1; %d adoptions of running tasks", n, resumed)
}

// waitAllFinal waits until every task is final, through api, and returns
// them.
func waitAllFinal(t testing.TB, api delegatev1.ManagerServiceClient, ids []string, timeout time.Duration) map[string]*delegatev1.TaskInfo {
	t.Helper()
	out := map[string]*delegatev1.TaskInfo{}
	deadline := time.Now().Add(timeout)
	for _, id := range ids {
		for {
			ti, err := retryUnavailable(t, func(ctx context.Context) (*delegatev1.TaskInfo, error) {
				return api.GetTask(ctx, &delegatev1.GetTaskRequest{Id: id})
			})
			if err != nil {
				t.Fatalf("GetTask(%s): %v", id, err)
			}
			if s := ti.GetState(); s == delegatev1.TaskState_SUCCEEDED || s == delegatev1.TaskState_FAILED {
				out[id] = ti
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s still %s after %s", id, ti.GetState(), timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out
}
