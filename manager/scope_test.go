package manager

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func TestScopeRules(t *testing.T) {
	t.Parallel()
	var (
		none  = store.Scope{}
		a     = store.Scope{Account: "a"}
		ao    = store.Scope{Account: "a", Org: "o"}
		aop   = store.Scope{Account: "a", Org: "o", Project: "p"}
		aoq   = store.Scope{Account: "a", Org: "o", Project: "q"}
		ax    = store.Scope{Account: "a", Org: "x"}
		ab    = store.Scope{Account: "ab"}
		b     = store.Scope{Account: "b"}
		bop   = store.Scope{Account: "b", Org: "o", Project: "p"}
		tests = []struct {
			x, y                     store.Scope
			serves, visible, overlap bool // serves(x, y), visible(x, y), overlaps(x, y)
		}{
			{none, none, true, true, true},
			{none, aop, true, true, true},
			{aop, none, true, false, true}, // a task without a scope runs anywhere; a scoped token sees nothing unscoped
			{a, a, true, true, true},
			{a, ao, true, true, true},
			{a, aop, true, true, true},
			{ao, aop, true, true, true},
			{aop, aop, true, true, true},
			{aop, ao, false, false, true},
			{aop, a, false, false, true},
			{aop, aoq, false, false, false},
			{ao, ax, false, false, false},
			{a, ab, false, false, false}, // not a prefix match
			{ab, a, false, false, false},
			{a, b, false, false, false},
			{a, bop, false, false, false},
			{bop, aop, false, false, false},
		}
	)
	for _, tt := range tests {
		if got := serves(tt.x, tt.y); got != tt.serves {
			t.Errorf("serves(%q, %q) = %v, want %v", tt.x, tt.y, got, tt.serves)
		}
		if got := visible(tt.x, tt.y); got != tt.visible {
			t.Errorf("visible(%q, %q) = %v, want %v", tt.x, tt.y, got, tt.visible)
		}
		if got := overlaps(tt.x, tt.y); got != tt.overlap {
			t.Errorf("overlaps(%q, %q) = %v, want %v", tt.x, tt.y, got, tt.overlap)
		}
		if got := overlaps(tt.y, tt.x); got != tt.overlap {
			t.Errorf("overlaps(%q, %q) = %v, want %v (symmetric)", tt.y, tt.x, got, tt.overlap)
		}
	}
}

// TestResumeNeedsAServingScope: a task's lease is kept on a reconnect or
// renewed by a heartbeat only for a delegate serving the task's scope. A
// delegate of another scope that connects under the holder's name (free
// once the holder disconnected) and names the lease is told to cancel,
// and the task stays with no delegate until its lease expires.
func TestResumeNeedsAServingScope(t *testing.T) {
	t.Parallel()
	cfg := DispatchConfig{
		LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(time.Second),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(time.Minute), MaxAttempts: 3,
	}
	d := newDispatcher(cfg, nil, zerolog.Nop(), newMetrics())
	a := store.Scope{Account: "a"}
	b := store.Scope{Account: "b"}
	taken := func(o *outbox.Outbox[*delegatev1.ManagerMessage]) []*delegatev1.ManagerMessage {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		return o.Take(done, nil)
	}

	outA := outbox.New[*delegatev1.ManagerMessage](0)
	dgA, err := d.connect(&delegatev1.Hello{Name: "x", Capacity: 1}, identity{kind: kindDelegate, name: "token-a", scope: a}, outA)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := d.submit(context.Background(), SubmitRequest{Kind: "ping", Scope: a,
		Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
	if err != nil {
		t.Fatal(err)
	}
	var lease string
	for _, m := range taken(outA) {
		if m.GetTask().GetId() == tk.id {
			lease = m.GetTask().GetLeaseId()
		}
	}
	if lease == "" {
		t.Fatal("the task was not sent to x of scope a")
	}
	running := []*delegatev1.RunningTask{{TaskId: tk.id, LeaseId: lease}}
	d.disconnect(dgA)

	for _, how := range []string{"hello", "heartbeat"} {
		outB := outbox.New[*delegatev1.ManagerMessage](0)
		hello := &delegatev1.Hello{Name: "x", Capacity: 1}
		if how == "hello" {
			hello.Running = running
		}
		dgB, err := d.connect(hello, identity{kind: kindDelegate, name: "token-b", scope: b}, outB)
		if err != nil {
			t.Fatalf("connect x of scope b after x of scope a left: %v", err)
		}
		if how == "heartbeat" {
			d.heartbeat(dgB, 0, running)
		}
		cancelled := false
		for _, m := range taken(outB) {
			cancelled = cancelled || m.GetCancel().GetTaskId() == tk.id
		}
		d.mu.Lock()
		_, holds := dgB.running[tk.id]
		d.mu.Unlock()
		if !cancelled || holds {
			t.Errorf("%s: x of scope b naming the lease of a task of scope a: cancelled %v, holds it %v; want cancelled, not held", how, cancelled, holds)
		}
		d.disconnect(dgB)
	}
}
