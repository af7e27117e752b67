package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestPoolsMatchAScan drives the dispatcher's own methods (connect,
// credit, sync submits, results, draining, operator tags, disconnects) in
// a random order, with delegates and tasks of random scopes, and checks
// after every step that each pool holds exactly the connected, eligible
// delegates matching its scope and selectors, in heap order; that every
// dispatch went to a least loaded eligible delegate, as a scan of all
// delegates would have chosen; and that every task sent went to a
// delegate serving its scope and carrying its selectors.
func TestPoolsMatchAScan(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	cfg := Config{
		LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(time.Second),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(time.Minute), MaxAttempts: 3,
	}
	d := New(cfg, nil, zerolog.Nop(), NewMetrics())
	tagChoices := []string{"a", "b", "c"}
	selectorSets := [][]string{nil, {"a"}, {"b"}, {"a", "b"}, {"c"}}
	// Delegate scopes (zero: an unscoped token) and task scopes (zero: a
	// ping of an unscoped operator), across two accounts.
	dgScopes := []store.Scope{{}, {Account: "a"}, {Account: "a", Org: "o"}, {Account: "a", Org: "o", Project: "p"},
		{Account: "b"}, {Account: "b", Org: "o", Project: "p"}}
	taskScopes := append(slices.Clone(dgScopes), store.Scope{Account: "a", Org: "o", Project: "q"}, store.Scope{Account: "b", Org: "x"})
	type sent struct {
		scope     store.Scope
		selectors []string
	}
	submitted := map[string]sent{} // task id → what it needed

	type agent struct {
		dg  *delegate
		out *outbox.Outbox[*delegatev1.ManagerMessage]
		got []*delegatev1.Task // dispatched, not yet answered
	}
	agents := map[string]*agent{}
	// drainOut collects what the dispatcher sent each agent.
	done, cancel := context.WithCancel(context.Background())
	cancel() // Take returns what is queued, without waiting
	drainOut := func() {
		for _, a := range agents {
			for {
				msgs := a.out.Take(done, nil)
				if msgs == nil {
					break
				}
				for _, m := range msgs {
					if task := m.GetTask(); task != nil {
						need := submitted[task.GetId()]
						if !scanServes(a.dg.scope, need.scope) || !a.dg.tags.hasAll(need.selectors) {
							t.Fatalf("task of scope %q with selectors %v sent to %s of scope %q with tags %v",
								need.scope, need.selectors, a.dg.name, a.dg.scope, a.dg.tags.sorted())
						}
						a.got = append(a.got, task)
					}
				}
			}
		}
	}

	for step := range 3000 {
		var what string
		switch op := rng.IntN(10); {
		case op == 0 || len(agents) < 2: // connect (or reconnect under a name)
			name := fmt.Sprintf("dg%d", rng.IntN(12))
			var tags []string
			for _, tg := range tagChoices {
				if rng.IntN(2) == 0 {
					tags = append(tags, tg)
				}
			}
			sc := dgScopes[rng.IntN(len(dgScopes))]
			out := outbox.New[*delegatev1.ManagerMessage](0)
			// One token and one agent process per scope and name: the
			// same pair reconnects, another scope claims a held name.
			id := identity.Identity{Kind: identity.Delegate, Name: "token-" + sc.String(), Scope: sc}
			hello := &delegatev1.Hello{Name: name, Tags: tags, Capacity: int32(1 + rng.IntN(3)), InstanceId: name + "-" + sc.String()}
			dg, err := d.connect(hello, id, out)
			if errors.Is(err, ErrNameInUse) {
				// Only a delegate of another scope keeps its name.
				if old := agents[name]; old == nil || old.dg.scope == sc {
					t.Fatalf("step %d: connect %s of scope %q = %v, but no delegate of another scope holds the name", step, name, sc, err)
				}
				what = fmt.Sprintf("connect %s of scope %q refused", name, sc)
				break
			}
			if err != nil {
				t.Fatalf("connect %s: %v", name, err)
			}
			if old := agents[name]; old != nil && old.dg.scope != sc {
				t.Fatalf("step %d: %s of scope %q replaced the connected %s of scope %q", step, name, sc, name, old.dg.scope)
			}
			agents[name] = &agent{dg: dg, out: out}
			what = fmt.Sprintf("connect %s of scope %q %v", name, sc, tags)
		case op == 1: // disconnect
			a := pick(rng, agents)
			d.disconnect(a.dg)
			delete(agents, a.dg.name)
			what = "disconnect " + a.dg.name
		case op == 2: // drain
			a := pick(rng, agents)
			d.drain(a.dg)
			what = "drain " + a.dg.name
		case op == 3: // operator tags
			a := pick(rng, agents)
			tg := tagChoices[rng.IntN(len(tagChoices))]
			key := tagKey{a.dg.scope, a.dg.name}
			d.mu.Lock()
			if rng.IntN(2) == 0 {
				d.opTags[key] = &opTagRecord{tags: []string{tg}, token: a.dg.token}
			} else {
				delete(d.opTags, key)
			}
			sends := d.tagsChangeLocked(key)
			d.mu.Unlock()
			d.deliver(sends)
			what = "retag " + a.dg.name
		case op <= 6: // submit a sync ping
			sel := selectorSets[rng.IntN(len(selectorSets))]
			sc := taskScopes[rng.IntN(len(taskScopes))]
			d.mu.Lock()
			want := minLoad(d, sc, sel)
			d.mu.Unlock()
			tk, err := d.submit(context.Background(), SubmitRequest{Kind: "ping", Selectors: sel, Scope: sc,
				Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			submitted[tk.id] = sent{scope: sc, selectors: normalizeTags(sel)}
			d.mu.Lock()
			got := -1
			if tk.state == store.StateLeased {
				if dg := d.delegates[tk.holder]; dg != nil {
					got = len(dg.running) - 1 // its load before this task
				}
			}
			queuedAhead := d.queues[tk.key] != nil && d.queues[tk.key].l.Front().Value.(*task) != tk
			d.mu.Unlock()
			if !queuedAhead && got != want {
				t.Fatalf("step %d: task of scope %q with selectors %v went to a delegate with load %d, want %d (least loaded eligible)", step, sc, sel, got, want)
			}
			what = fmt.Sprintf("submit %q %v", sc, sel)
		default: // answer a dispatched task, then give the credit back
			drainOut()
			a := pick(rng, agents)
			if len(a.got) == 0 {
				what = "nothing to answer"
				break
			}
			task := a.got[0]
			a.got = a.got[1:]
			d.result(a.dg, &delegatev1.TaskResult{TaskId: task.GetId(), LeaseId: task.GetLeaseId(), Outcome: &delegatev1.Outcome{}})
			d.credit(a.dg, 1)
			what = "result from " + a.dg.name
		}
		drainOut()
		d.mu.Lock()
		err := checkPools(d)
		d.mu.Unlock()
		if err != nil {
			t.Fatalf("step %d (%s): %v", step, what, err)
		}
	}
}

func pick[V any](rng *rand.Rand, m map[string]V) V {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return m[keys[rng.IntN(len(keys))]]
}

// minLoad is what a scan finds: the fewest running tasks among connected,
// eligible delegates serving scope and matching selectors, or -1.
func minLoad(d *Dispatcher, scope store.Scope, selectors []string) int {
	best := -1
	for _, dg := range d.delegates {
		if dg.eligible() && scanServes(dg.scope, scope) && dg.tags.hasAll(normalizeTags(selectors)) && (best < 0 || len(dg.running) < best) {
			best = len(dg.running)
		}
	}
	return best
}

// scanServes is the scope rule written out again for the test, on the
// scopes' text: an unscoped delegate or task matches anything, otherwise
// the task's scope is the delegate's or lies below it.
func scanServes(dg, task store.Scope) bool {
	d, t := dg.String(), task.String()
	return d == "" || t == "" || t == d || strings.HasPrefix(t, d+"/")
}

// checkPools verifies every pool against a scan of the delegates.
func checkPools(d *Dispatcher) error {
	for key, p := range d.pools {
		want := map[*delegate]bool{}
		for _, dg := range d.delegates {
			if dg.eligible() && scanServes(dg.scope, p.scope) && dg.tags.hasAll(p.selectors) {
				want[dg] = true
			}
		}
		if key != matchKey(p.scope, p.selectors) {
			return fmt.Errorf("pool %q has the key of scope %q and selectors %v", key, p.scope, p.selectors)
		}
		if len(p.heap) != len(want) {
			return fmt.Errorf("pool %q holds %d delegates, want %d", key, len(p.heap), len(want))
		}
		for i, dg := range p.heap {
			if !want[dg] {
				return fmt.Errorf("pool %q holds %s, which is not connected, eligible and matching", key, dg.name)
			}
			if dg.pools[p] != i {
				return fmt.Errorf("pool %q: %s at %d thinks it is at %d", key, dg.name, i, dg.pools[p])
			}
			if i > 0 && p.Less(i, (i-1)/2) {
				return fmt.Errorf("pool %q: heap order broken at %d", key, i)
			}
		}
	}
	return nil
}
