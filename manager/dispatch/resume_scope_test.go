package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func TestResumeNeedsAServingScope(t *testing.T) {
	t.Parallel()
	cfg := Config{
		LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(time.Second),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(time.Minute), MaxAttempts: 3,
	}
	d := New(cfg, nil, zerolog.Nop(), NewMetrics())
	a := store.Scope{Account: "a"}
	b := store.Scope{Account: "b"}
	taken := func(o *outbox.Outbox[*delegatev1.ManagerMessage]) []*delegatev1.ManagerMessage {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		return o.Take(done, nil)
	}

	outA := outbox.New[*delegatev1.ManagerMessage](0)
	dgA, err := d.connect(&delegatev1.Hello{Name: "x", Capacity: 1}, identity.Identity{Kind: identity.Delegate, Name: "token-a", Scope: a}, outA)
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
		dgB, err := d.connect(hello, identity.Identity{Kind: identity.Delegate, Name: "token-b", Scope: b}, outB)
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
