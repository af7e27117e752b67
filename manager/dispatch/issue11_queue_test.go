package dispatch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/harness"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// A task submitted on replica A runs on the delegate of replica B; A's
// caller learns its end from the store (EventFinal), A never holds it.
func TestIssue11SubmitOnARunsOnB(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			a, rb := startReplica(t, b, "A"), startReplica(t, b, "B")
			led := newLedger()
			newAgent(t, led, "on-b", 4).connect(rb)
			s := ping(t, a, "")
			info := waitDone(t, s)
			if info.GetState() != delegatev1.TaskState_SUCCEEDED || info.GetDelegate() != "on-b" {
				t.Errorf("task submitted on A: %v, want SUCCEEDED on delegate on-b", info)
			}
			if n := led.ran(s.ID()); n != 1 {
				t.Errorf("task ran %d times, want 1", n)
			}
			if st := stored(t, a.st, s.ID()); st.Owner != "B" {
				t.Errorf("stored owner %q, want B (it pulled the task)", st.Owner)
			}
		})
	}
}

// 500 tasks submitted over two replicas, each with two delegates, all run
// exactly once, and both replicas' delegates get some (neither replica
// pulls more than its delegates' free credit).
func TestIssue11ExactlyOnceOverReplicas(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			reps := []*replicaRig{startReplica(t, b, "A"), startReplica(t, b, "B")}
			led := newLedger()
			byReplica := map[string][]*agent{}
			for _, r := range reps {
				for _, n := range []string{"1", "2"} {
					ag := newAgent(t, led, r.id+"-d"+n, 8)
					ag.connect(r)
					byReplica[r.id] = append(byReplica[r.id], ag)
				}
			}
			var subs []*Submitted
			for i := range 500 {
				subs = append(subs, ping(t, reps[i%2], ""))
			}
			ranOn := map[string]int{}
			for _, s := range subs {
				info := waitDone(t, s)
				if info.GetState() != delegatev1.TaskState_SUCCEEDED {
					t.Fatalf("task %s: %v, want SUCCEEDED", s.ID(), info)
				}
				ranOn[info.GetDelegate()[:1]]++
			}
			for _, s := range subs {
				if n := led.ran(s.ID()); n != 1 {
					t.Errorf("task %s ran %d times, want 1", s.ID(), n)
				}
			}
			if ranOn["a"] == 0 || ranOn["b"] == 0 {
				t.Errorf("tasks by replica of their delegate: %v, want some on each", ranOn)
			}
		})
	}
}

// Per-secret order across replicas: 100 ordered changes of one key,
// submitted in turn on two replicas with delegates on both, run one at a
// time in submission order.
func TestIssue11OrderAcrossReplicas(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			reps := []*replicaRig{startReplica(t, b, "A"), startReplica(t, b, "B")}
			led := newLedger()
			for _, r := range reps {
				newAgent(t, led, r.id+"-d", 4).connect(r)
			}
			var subs []*Submitted
			var want []string
			for i := range 100 {
				s := ping(t, reps[i%2], "acct eu-west-1 app/db")
				subs = append(subs, s)
				want = append(want, s.ID())
			}
			for _, s := range subs {
				if info := waitDone(t, s); info.GetState() != delegatev1.TaskState_SUCCEEDED {
					t.Fatalf("task %s: %v", s.ID(), info)
				}
			}
			led.mu.Lock()
			got := slices.Clone(led.order)
			led.mu.Unlock()
			if !slices.Equal(got, want) {
				t.Errorf("ordered tasks ran in another order than submitted (%d runs for %d tasks)", len(got), len(want))
			}
		})
	}
}

// A replica dies (its loops stop, its delegate's stream is gone, nothing
// disowned): its queued tasks are pulled by the survivor once the dead
// replica is dropped, its leased tasks once their stored leases lapse.
// Every task ends SUCCEEDED, once.
func TestIssue11DeadReplicaTasksRunOnSurvivor(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			a, rb := startReplica(t, b, "A"), startReplica(t, b, "B")
			led := newLedger()
			dead := newAgent(t, led, "on-b", 3)
			dead.hold = true
			dead.connect(rb)
			var leased []*Submitted
			for range 3 {
				leased = append(leased, ping(t, a, ""))
			}
			eventually(t, "B's delegate holds 3 tasks", func() bool { return dead.held() == 3 })
			// Two more, pulled by B just before it dies (as if its
			// delegates had credit): queued, owned by B.
			queued := []*Submitted{ping(t, a, ""), ping(t, a, "")}
			pulled, err := rb.st.(store.Cluster).Pull(context.Background(), "B", []store.PullWant{{N: 2}})
			if err != nil || len(pulled) != 2 {
				t.Fatalf("B pulls 2 = %d tasks, %v", len(pulled), err)
			}
			rb.stop()
			dead.disconnect()
			// The membership finds B dead and drops it.
			if err := a.st.(store.Cluster).DropReplica(context.Background(), "B"); err != nil {
				t.Fatalf("DropReplica(B) = %v", err)
			}
			newAgent(t, led, "on-a", 8).connect(a)
			for _, s := range append(leased, queued...) {
				if info := waitDone(t, s); info.GetState() != delegatev1.TaskState_SUCCEEDED || info.GetDelegate() != "on-a" {
					t.Errorf("task %s: %v, want SUCCEEDED on on-a", s.ID(), info)
				}
			}
			for _, s := range queued {
				if n := led.ran(s.ID()); n != 1 {
					t.Errorf("queued task %s ran %d times, want 1", s.ID(), n)
				}
			}
			for _, s := range leased {
				if n := led.ran(s.ID()); n != 2 { // once on the dead replica's delegate, never finished
					t.Errorf("leased task %s ran %d times, want 2", s.ID(), n)
				}
			}
		})
	}
}

// A delegate that moves from replica A to replica B with running tasks
// keeps them: B adopts them (no cancel, no second dispatch) and accepts
// their results, those its Hello lists and one it sends again for a task
// it finished while disconnected. A lets go of its copies.
func TestIssue11DelegateMovesWithRunningTasks(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			a, rb := startReplica(t, b, "A"), startReplica(t, b, "B")
			led := newLedger()
			x := newAgent(t, led, "mover", 3)
			x.hold = true
			x.connect(a)
			subs := []*Submitted{ping(t, rb, ""), ping(t, rb, ""), ping(t, rb, "")}
			eventually(t, "the delegate holds 3 tasks on A", func() bool { return x.held() == 3 })
			x.disconnect()
			// It finished one while disconnected: the result waits for
			// the next stream.
			x.mu.Lock()
			offID, offLease := subs[2].ID(), x.running[subs[2].ID()]
			delete(x.running, offID)
			x.mu.Unlock()

			x.connect(rb)
			x.mu.Lock()
			s := x.s
			x.mu.Unlock()
			s.Result(&delegatev1.TaskResult{TaskId: offID, LeaseId: offLease, Outcome: &delegatev1.Outcome{Code: delegatev1.Code_OK}})
			for _, sub := range subs[:2] {
				if st := stored(t, rb.st, sub.ID()); st.Owner != "B" || st.State != store.StateLeased {
					t.Errorf("listed task after the Hello on B: owner %q, %s; want adopted by B, leased", st.Owner, st.State)
				}
			}
			x.finishHeld()
			for _, sub := range subs {
				if info := waitDone(t, sub); info.GetState() != delegatev1.TaskState_SUCCEEDED {
					t.Errorf("task %s: %v, want SUCCEEDED", sub.ID(), info)
				}
			}
			eventually(t, "the results are answered", func() bool {
				led.mu.Lock()
				defer led.mu.Unlock()
				return len(led.acked) == len(subs)
			})
			eventually(t, "A lets go of its copies", func() bool {
				a.d.mu.Lock()
				defer a.d.mu.Unlock()
				return len(a.d.tasks) == 0
			})
			x.mu.Lock()
			cancels := slices.Clone(x.cancels)
			x.mu.Unlock()
			led.mu.Lock()
			defer led.mu.Unlock()
			for _, sub := range subs {
				if led.runs[sub.ID()] != 1 || !led.acked[sub.ID()] {
					t.Errorf("task %s: ran %d times, result accepted %v; want once, accepted", sub.ID(), led.runs[sub.ID()], led.acked[sub.ID()])
				}
			}
			if len(cancels) > 0 {
				t.Errorf("the moved delegate was told to cancel %v, want nothing cancelled", cancels)
			}
		})
	}
}

// Attack: a delegate of another scope, on another replica, names the
// lease of a running task of scope a (in its Hello, then in a result).
// It is refused (cancel, stale result) and nothing changes in the store.
func TestIssue11AdoptRefusesAnotherScope(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			a, rb := startReplica(t, b, "A"), startReplica(t, b, "B")
			led := newLedger()
			owner := newAgent(t, led, "owner", 1)
			owner.scope, owner.hold = store.Scope{Account: "a"}, true
			owner.connect(a)
			s, err := a.d.Submit(context.Background(), SubmitRequest{Kind: "ping", Async: true, Scope: store.Scope{Account: "a"},
				Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the owner runs the task", func() bool { return owner.held() == 1 })
			owner.mu.Lock()
			lease := owner.running[s.ID()]
			owner.mu.Unlock()
			before := stored(t, a.st, s.ID())

			thief := newAgent(t, led, "thief", 1)
			thief.scope, thief.hold = store.Scope{Account: "b"}, true
			thief.running[s.ID()] = lease
			thief.connect(rb)
			thief.mu.Lock()
			ts := thief.s
			thief.mu.Unlock()
			ts.Result(&delegatev1.TaskResult{TaskId: s.ID(), LeaseId: lease, Outcome: &delegatev1.Outcome{Code: delegatev1.Code_OK}})
			eventually(t, "the thief's result is answered", func() bool {
				led.mu.Lock()
				defer led.mu.Unlock()
				_, ok := led.acked[s.ID()]
				return ok
			})
			thief.mu.Lock()
			cancelled := slices.Contains(thief.cancels, s.ID())
			thief.mu.Unlock()
			led.mu.Lock()
			accepted := led.acked[s.ID()]
			led.mu.Unlock()
			if !cancelled || accepted {
				t.Errorf("delegate of scope b naming a lease of scope a: cancelled %v, result accepted %v; want cancelled, refused", cancelled, accepted)
			}
			after := stored(t, a.st, s.ID())
			// (Its lease expiry moves: the owner's heartbeats renew it.)
			if after.Owner != before.Owner || after.State != store.StateLeased || after.LeaseID != before.LeaseID ||
				after.Delegate != before.Delegate || after.Attempt != before.Attempt {
				t.Errorf("stored task changed: before %+v, after %+v", before, after)
			}
			if after.Owner != "A" {
				t.Errorf("owner %q, want A", after.Owner)
			}
			rb.d.mu.Lock()
			_, held := rb.d.tasks[s.ID()]
			rb.d.mu.Unlock()
			if held {
				t.Error("replica B holds the task after the thief's claims")
			}
		})
	}
}

// A rolling restart re-runs nothing: replica A closes (SIGTERM), its
// queued tasks go back to the shared queue and run on B, its delegate's
// running tasks are adopted by B when the delegate reconnects there.
func TestIssue11RollingRestartRerunsNothing(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			a, rb := startReplica(t, b, "A"), startReplica(t, b, "B")
			led := newLedger()
			x := newAgent(t, led, "x", 2)
			x.hold = true
			x.connect(a)
			running := []*Submitted{ping(t, a, ""), ping(t, rb, "")}
			eventually(t, "x holds 2 tasks on A", func() bool { return x.held() == 2 })
			// Two more A pulled and queued (as if for a delegate that
			// then filled up).
			queued := []*Submitted{ping(t, a, ""), ping(t, a, "")}
			pulled, err := a.st.(store.Cluster).Pull(context.Background(), "A", []store.PullWant{{N: 2}})
			if err != nil || len(pulled) != 2 {
				t.Fatalf("A pulls 2 = %d tasks, %v", len(pulled), err)
			}
			a.d.admitPulled(pulled)

			a.d.Close()
			for _, s := range queued {
				if st := stored(t, rb.st, s.ID()); st.Owner != "" || st.State != store.StateQueued {
					t.Errorf("queued task after A's Close: owner %q, %s; want unowned, queued", st.Owner, st.State)
				}
			}
			x.disconnect()
			a.stop()
			a.d.Join()
			x.mu.Lock()
			x.hold = false // what it holds, it finishes below; new tasks at once
			x.mu.Unlock()
			x.connect(rb)
			newAgent(t, led, "y", 4).connect(rb)
			x.finishHeld()
			for _, s := range append(running, queued...) {
				// A is gone: read the store (B's) rather than A's callers.
				if st := waitStored(t, rb.st, s.ID()); st.State != store.StateSucceeded {
					t.Errorf("task %s: %s %s, want succeeded", s.ID(), st.State, st.Code)
				}
				if n := led.ran(s.ID()); n != 1 {
					t.Errorf("task %s ran %d times, want 1", s.ID(), n)
				}
			}
		})
	}
}

// An owned queued task no local delegate can take (its delegate left:
// here none is connected) goes back to the shared queue and runs on
// another replica.
func TestIssue11UnrunnableTaskGivenBack(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			a, rb := startReplica(t, b, "A"), startReplica(t, b, "B")
			led := newLedger()
			s := ping(t, rb, "")
			pulled, err := a.st.(store.Cluster).Pull(context.Background(), "A", []store.PullWant{{N: 1}})
			if err != nil || len(pulled) != 1 {
				t.Fatalf("A pulls 1 = %d tasks, %v", len(pulled), err)
			}
			a.d.admitPulled(pulled)
			newAgent(t, led, "y", 1).connect(rb)
			if info := waitDone(t, s); info.GetState() != delegatev1.TaskState_SUCCEEDED || info.GetDelegate() != "y" {
				t.Errorf("task: %v, want SUCCEEDED on y (B)", info)
			}
			if n := led.ran(s.ID()); n != 1 {
				t.Errorf("ran %d times, want 1", n)
			}
		})
	}
}

// failingPull is a replica's store whose Pull fails (while down is set)
// and is counted.
type failingPull struct {
	store.Store
	store.Cluster
	down  atomic.Bool
	pulls atomic.Int64
}

func (f *failingPull) Pull(ctx context.Context, replica string, wants []store.PullWant) ([]*store.Task, error) {
	f.pulls.Add(1)
	if f.down.Load() {
		return nil, store.Unavailable(errors.New("connection refused"))
	}
	return f.Cluster.Pull(ctx, replica, wants)
}

// A failing store is not spun on: a thousand wakeups of the puller make a
// few Pull calls (backoff), and a few log lines; once the store is back
// the puller pulls again.
func TestIssue11PullNoSpinOnStoreFailure(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			var logs harness.LogBuffer
			inner := b.open(t, "A")
			st := &failingPull{Store: inner, Cluster: inner.(store.Cluster)}
			d := New(clusterCfg(), st, zerolog.New(&logs), NewMetrics())
			d.SetCluster(ClusterConfig{Replica: "A", Store: st, PollInterval: time.Second})
			b.listen(t, inner, d.OnEvent)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); d.Sweep(ctx, 50*time.Millisecond) }()
			defer func() { d.Close(); cancel(); <-done; d.Join() }()
			r := &replicaRig{id: "A", d: d, st: st}
			led := newLedger()
			newAgent(t, led, "x", 4).connect(r)

			st.down.Store(true)
			before := st.pulls.Load()
			start := time.Now()
			for range 1000 {
				d.OnEvent(store.Event{Kind: store.EventQueued})
				time.Sleep(time.Millisecond)
			}
			pulls := int(st.pulls.Load() - before)
			// Without backoff: about one Pull per wakeup. With it: the
			// retries of an exponential backoff from 20 ms over the
			// elapsed time.
			if bound := 2 + int(time.Since(start)/(10*time.Millisecond))/10; pulls > bound {
				t.Errorf("%d Pull calls over a failing store for 1000 wakeups in %s, want at most %d", pulls, time.Since(start), bound)
			}
			if n := strings.Count(logs.String(), "store call failed"); n > 2 {
				t.Errorf("%d log lines for one outage, want at most 2:\n%s", n, logs.String())
			}
			st.down.Store(false)
			s := ping(t, r, "")
			if info := waitDone(t, s); info.GetState() != delegatev1.TaskState_SUCCEEDED {
				t.Errorf("task after the store came back: %v", info)
			}
		})
	}
}

// okRunner runs every platform task with OK.
type okRunner struct{}

func (okRunner) Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome {
	return &delegatev1.Outcome{Code: delegatev1.Code_OK}
}

// The platform delegate pulls only the tasks that select it: a replica
// with no agent leaves a task without selectors in the shared queue
// (store.PullWant.SelectedOnly), and runs a platform task.
func TestIssue11PlatformPullsOnlyItsTasks(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			a := startReplica(t, b, "A")
			ctx, cancel := context.WithCancel(context.Background())
			wait := a.d.StartPlatform(ctx, okRunner{}, 4)
			t.Cleanup(func() { cancel(); wait() })
			plain := ping(t, a, "")
			platform, err := a.d.Submit(context.Background(), SubmitRequest{Kind: "ping", Async: true, Selectors: []string{PlatformTag},
				Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
			if err != nil {
				t.Fatal(err)
			}
			if info := waitDone(t, platform); info.GetState() != delegatev1.TaskState_SUCCEEDED {
				t.Errorf("platform task: %v, want SUCCEEDED", info)
			}
			if st := stored(t, a.st, plain.ID()); st.Owner != "" || st.State != store.StateQueued {
				t.Errorf("task without selectors: owner %q, %s; want unowned and queued (no agent anywhere)", st.Owner, st.State)
			}
		})
	}
}
