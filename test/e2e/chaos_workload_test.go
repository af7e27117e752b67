package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// The chaos workload: chains of secret operations, one chain per secret
// name. A chain submits its async operations back to back, without
// waiting for one to be final before the next: the manager runs the
// mutations of one secret in submission order (per-secret order), so what
// each must do, and what AWS must hold at the end, follows from the plan.
// It waits for those submitted only before a sync get or a forced delete
// (which checks the versions first). Many chains run at once.

type opKind int

const (
	opCreate opKind = iota
	opUpsert
	opUpdate
	opDelete      // with a 7-day recovery window
	opForceDelete // without recovery
	opRestore
	opGet // sync: never stored, retried freely
)

var opKinds = map[opKind]string{
	opCreate: "secret.create", opUpsert: "secret.upsert", opUpdate: "secret.update",
	opDelete: "secret.delete", opForceDelete: "secret.delete", opRestore: "secret.restore", opGet: "secret.get",
}

// chainOp is one planned operation and the outcome it must have.
type chainOp struct {
	kind  opKind
	put   bool   // through the use_put_secret_value connector
	value string // creates, upserts and updates
	want  delegatev1.Code
}

func (op chainOp) writes() bool {
	return op.want == delegatev1.Code_OK && (op.kind == opCreate || op.kind == opUpsert || op.kind == opUpdate)
}

// chain is the plan of one secret, and once run, what AWS must hold.
type chain struct {
	name   string
	ops    []chainOp
	broken bool        // an operation went wrong (already reported)
	model  secretModel // after the last operation that ran
}

// secretModel is what AWS must hold for a secret after the operations so
// far: one version per version-creating task since it was (re)created.
type secretModel struct {
	exists, scheduled bool
	values            map[string]string // version id -> value
	current           string            // the AWSCURRENT version id
	// order lists the version ids in the order their tasks were
	// submitted: the order AWS must have created them in (per-secret order).
	order []string
}

func (s *secretModel) apply(op chainOp, versionID string) {
	if op.want != delegatev1.Code_OK {
		return
	}
	switch op.kind {
	case opCreate, opUpsert, opUpdate:
		if !s.exists {
			*s = secretModel{exists: true, values: map[string]string{}}
		}
		s.values[versionID], s.current = op.value, versionID
		s.order = append(s.order, versionID)
	case opDelete:
		s.scheduled = true
	case opRestore:
		s.scheduled = false
	case opForceDelete:
		*s = secretModel{}
	}
}

// planChains draws chains holding n async operations in all.
func planChains(rng *rand.Rand, n int) []*chain {
	var chains []*chain
	for left := n; left > 0; {
		c := planChain(rng, fmt.Sprintf("s%05d", len(chains)), min(left, 3+rng.IntN(6)))
		for _, op := range c.ops {
			if op.kind != opGet {
				left--
			}
		}
		chains = append(chains, c)
	}
	return chains
}

// planChain draws up to budget async operations, each valid after the ones
// before it, with sync gets between some of them. A few are meant to fail:
// a create of a name that exists, an update of a secret scheduled for
// deletion. A forced delete may be followed by a new create of the name.
func planChain(rng *rand.Rand, name string, budget int) *chain {
	const absent, live, scheduled = 0, 1, 2
	c, state := &chain{name: name}, absent
	for async := 0; async < budget; async++ {
		var op chainOp
		switch p := rng.IntN(100); state {
		case absent:
			op.kind, state = opCreate, live
			if p < 30 {
				op.kind = opUpsert
			}
		case live:
			switch {
			case p < 45:
				op.kind = opUpdate
			case p < 55:
				op.kind = opUpsert
			case p < 62:
				op.kind, op.want = opCreate, delegatev1.Code_ALREADY_EXISTS
			case p < 82:
				op.kind, state = opDelete, scheduled
			default:
				op.kind, state = opForceDelete, absent
			}
		case scheduled:
			switch {
			case p < 65:
				op.kind, state = opRestore, live
			case p < 80:
				op.kind, op.want = opUpdate, delegatev1.Code_SCHEDULED_FOR_DELETION
			default:
				op.kind, state = opForceDelete, absent
			}
		}
		op.put = rng.IntN(3) == 0
		if op.kind == opCreate || op.kind == opUpsert || op.kind == opUpdate {
			op.value = fmt.Sprintf("%s-v%d-%08x", name, len(c.ops), rng.Uint32())
		}
		c.ops = append(c.ops, op)
		if state == live && rng.IntN(4) == 0 {
			c.ops = append(c.ops, chainOp{kind: opGet})
		}
	}
	return c
}

// workload runs chains against the manager and keeps the ledger of every
// task it submitted.
type workload struct {
	t   *testing.T
	api delegatev1.ManagerServiceClient
	emu *awsemu.Server
	// gate, when not nil, is waited on before a submission once
	// gateAt tasks were submitted: the chaos schedule closes it when its
	// minimum events happened, so a fast run cannot finish without them.
	gate   <-chan struct{}
	gateAt int64
	// marked is closed when the markAt-th task is submitted: the
	// moment for the manager kill, in the midst of submissions.
	marked chan struct{}
	markAt int64

	mu    sync.Mutex                      // guards known
	known map[string]*delegatev1.TaskInfo // task id -> final info (nil until final)

	// inflight counts Submit calls under way: the manager kill and the
	// drops aim at a moment when some are.
	inflight                               atomic.Int64
	duplicates                             atomic.Int64 // found before forced deletes
	submitted, completed, expectedFailures atomic.Int64
	// ambiguous counts submit attempts that failed without an answer;
	// adopted and resubmitted, the retries (under the same request id)
	// answered with the task an earlier attempt stored, or with the task
	// the retry made.
	ambiguous, adopted, resubmitted atomic.Int64
	gets, getRetries                atomic.Int64
}

// dialWaitForReady is a client of the manager's API at addr whose calls
// wait while the manager is down instead of failing, reconnecting within a
// second once it is back.
func dialWaitForReady(t testing.TB, addr, operatorToken string) delegatev1.ManagerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(operatorToken)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return delegatev1.NewManagerServiceClient(conn)
}

// run runs the chains on workers goroutines and returns when all are done
// or ctx ends.
func (w *workload) run(ctx context.Context, chains []*chain, workers int) {
	ch := make(chan *chain)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range ch {
				w.runChain(ctx, c)
			}
		})
	}
	for _, c := range chains {
		select {
		case ch <- c:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
}

func (w *workload) runChain(ctx context.Context, c *chain) {
	type submitted struct {
		op chainOp
		id string
	}
	var pending []submitted // submitted, in order, not yet seen final
	settle := func() bool {
		for _, p := range pending {
			ti, ok := w.waitFinal(ctx, p.id)
			if !ok || !w.check(c, p.op, ti) {
				return false
			}
			c.model.apply(p.op, ti.GetOutcome().GetSecret().GetVersionId())
		}
		pending = pending[:0]
		return true
	}
	for i, op := range c.ops {
		if ctx.Err() != nil {
			c.broken = true
			return
		}
		if op.kind == opGet || op.kind == opForceDelete {
			if !settle() {
				c.broken = true
				return
			}
		}
		if op.kind == opGet {
			if !w.get(ctx, c) {
				c.broken = true
				return
			}
			continue
		}
		if op.kind == opForceDelete {
			// The secret's versions are about to go: check them now.
			w.duplicates.Add(int64(checkSecret(w.t, w.emu, c)))
		}
		id, ok := w.submit(ctx, c.name, op, fmt.Sprintf("chaos.%s.%d", c.name, i))
		if !ok {
			c.broken = true
			return
		}
		pending = append(pending, submitted{op, id})
	}
	if !settle() {
		c.broken = true
	}
}

func (op chainOp) request(name string) *delegatev1.SecretRequest {
	conn := chaosConnector
	if op.put {
		conn = chaosPutConnector
	}
	req := &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: conn}, Async: op.kind != opGet}
	val := &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: op.value}}
	switch op.kind {
	case opCreate:
		req.Op = &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: name, Value: val}}
	case opUpsert:
		req.Op = &delegatev1.SecretRequest_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: name, Value: val}}
	case opUpdate:
		req.Op = &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{Name: name, Value: val}}
	case opDelete:
		req.Op = &delegatev1.SecretRequest_Delete{Delete: &delegatev1.DeleteSecretOp{Name: name, RecoveryWindowDays: 7}}
	case opForceDelete:
		req.Op = &delegatev1.SecretRequest_Delete{Delete: &delegatev1.DeleteSecretOp{Name: name, ForceDeleteWithoutRecovery: proto.Bool(true)}}
	case opRestore:
		req.Op = &delegatev1.SecretRequest_Restore{Restore: &delegatev1.RestoreSecretOp{Name: name}}
	case opGet:
		req.Op = &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: name}}
	}
	return req
}

// submit submits an async operation exactly once and returns its task id.
//
// Every attempt carries the operation's request id. A call that fails
// with Unavailable (the manager was killed, or the connection broken,
// while it was in flight) may or may not have stored the task, even after
// the caller saw the error: it is sent again under the same id, and the
// manager answers with the task the first attempt stored, if it stored
// one, else makes it now. Either way the operation has one task. A retry
// answered with a task created before the retry began is counted as
// adopted (an earlier attempt stored it), else as resubmitted.
func (w *workload) submit(ctx context.Context, name string, op chainOp, requestID string) (string, bool) {
	if w.gate != nil && w.submitted.Load() >= w.gateAt {
		select {
		case <-w.gate:
		case <-ctx.Done():
			return "", false
		}
	}
	req := op.request(name)
	req.RequestId = requestID
	for try := 1; ; try++ {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		w.inflight.Add(1)
		info, err := w.api.Secret(cctx, req)
		w.inflight.Add(-1)
		cancel()
		if err == nil {
			if try > 1 {
				if info.GetCreatedAt().AsTime().Before(start) {
					w.adopted.Add(1)
				} else {
					w.resubmitted.Add(1)
				}
			}
			if info.GetRequestId() != requestID {
				w.t.Errorf("Secret(%s %s) = task %s with request id %q, want %q", opKinds[op.kind], name, info.GetId(), info.GetRequestId(), requestID)
			}
			w.record(info.GetId())
			return info.GetId(), true
		}
		code := status.Code(err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded || try == 10 || ctx.Err() != nil {
			w.t.Errorf("Secret(%s %s, request id %s) = %v", opKinds[op.kind], name, requestID, err)
			return "", false
		}
		w.ambiguous.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
}

// awaitInflight waits up to max for a Submit call to be under way and
// returns how many are.
func (w *workload) awaitInflight(max time.Duration) int64 {
	for end := time.Now().Add(max); w.inflight.Load() == 0 && time.Now().Before(end); {
		time.Sleep(100 * time.Microsecond)
	}
	return w.inflight.Load()
}

func (w *workload) record(id string) {
	if w.submitted.Add(1) == w.markAt {
		close(w.marked)
	}
	w.mu.Lock()
	w.known[id] = nil
	w.mu.Unlock()
}

func isFinal(ti *delegatev1.TaskInfo) bool {
	s := ti.GetState()
	return s == delegatev1.TaskState_SUCCEEDED || s == delegatev1.TaskState_FAILED
}

// waitFinal watches a task until it is final, through manager restarts.
func (w *workload) waitFinal(ctx context.Context, id string) (*delegatev1.TaskInfo, bool) {
	deadline := time.Now().Add(3 * time.Minute)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		ti, err := w.watch(cctx, id)
		cancel()
		switch {
		case err == nil:
			w.mu.Lock()
			w.known[id] = ti
			w.mu.Unlock()
			return ti, true
		case status.Code(err) == codes.NotFound:
			w.t.Errorf("task %s was acknowledged, then lost: %v", id, err)
			return nil, false
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	w.t.Errorf("task %s not final: %v", id, last)
	return nil, false
}

func (w *workload) watch(ctx context.Context, id string) (*delegatev1.TaskInfo, error) {
	stream, err := w.api.WatchTask(ctx, &delegatev1.GetTaskRequest{Id: id})
	if err != nil {
		return nil, err
	}
	for {
		ti, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("watch ended before the task was final")
		}
		if err != nil {
			return nil, err
		}
		if isFinal(ti) {
			return ti, nil
		}
	}
}

// check compares a final task with what its operation must have done.
func (w *workload) check(c *chain, op chainOp, ti *delegatev1.TaskInfo) bool {
	o := ti.GetOutcome()
	what := fmt.Sprintf("task %s (%s %s, attempt %d on %q)", ti.GetId(), opKinds[op.kind], c.name, ti.GetAttempt(), ti.GetDelegate())
	switch {
	case op.want == delegatev1.Code_OK && (ti.GetState() != delegatev1.TaskState_SUCCEEDED || o.GetCode() != delegatev1.Code_OK):
		w.t.Errorf("%s = %s %s: %s, want SUCCEEDED", what, ti.GetState(), o.GetCode(), o.GetMessage())
		return false
	case op.want != delegatev1.Code_OK && (ti.GetState() != delegatev1.TaskState_FAILED || o.GetCode() != op.want):
		w.t.Errorf("%s = %s %s: %s, want FAILED %s", what, ti.GetState(), o.GetCode(), o.GetMessage(), op.want)
		return false
	case op.want != delegatev1.Code_OK:
		w.expectedFailures.Add(1)
	case o.GetSecret().GetName() != c.name:
		w.t.Errorf("%s: result names %q, want %q", what, o.GetSecret().GetName(), c.name)
		return false
	case op.writes() && o.GetSecret().GetVersionId() != tasks.RequestToken(ti.GetId()):
		w.t.Errorf("%s: version %q, want %q (the token of the task id)", what, o.GetSecret().GetVersionId(), tasks.RequestToken(ti.GetId()))
		return false
	}
	w.completed.Add(1)
	return true
}

// get reads the secret (sync) and compares it with the last value written.
// Reads are never stored and are safe to repeat: one cut off by the chaos
// is retried.
func (w *workload) get(ctx context.Context, c *chain) bool {
	for try := 1; ctx.Err() == nil; try++ {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		ti, err := w.api.Secret(cctx, chainOp{kind: opGet}.request(c.name))
		cancel()
		code := ti.GetOutcome().GetCode()
		// UNAVAILABLE: in a cluster, the replica the get was forwarded
		// to died under it (a retryable outcome, as a careful client
		// treats it).
		retry := status.Code(err) == codes.Unavailable ||
			err == nil && (code == delegatev1.Code_DELEGATE_LOST || code == delegatev1.Code_TIMEOUT ||
				code == delegatev1.Code_NO_ELIGIBLE_DELEGATE || code == delegatev1.Code_UNAVAILABLE)
		if retry && try < 10 {
			w.getRetries.Add(1)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil || ti.GetState() != delegatev1.TaskState_SUCCEEDED {
			w.t.Errorf("get %s: %v, outcome %s %s: %s", c.name, err, ti.GetState(), code, ti.GetOutcome().GetMessage())
			return false
		}
		res := ti.GetOutcome().GetSecret()
		if got, want := res.GetValue().GetStringValue(), c.model.values[c.model.current]; got != want || res.GetVersionId() != c.model.current {
			w.t.Errorf("get %s = %q (version %s), want %q (version %s)", c.name, got, res.GetVersionId(), want, c.model.current)
			return false
		}
		w.gets.Add(1)
		return true
	}
	return false
}
