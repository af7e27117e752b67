package manager

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestPoolsMatchAScan drives the dispatcher's own methods (connect,
// credit, sync submits, results, draining, operator tags, disconnects) in
// a random order and checks after every step that each pool holds exactly
// the connected, eligible delegates matching its selectors, in heap
// order, and that every dispatch went to a least loaded eligible
// delegate, as a scan of all delegates would have chosen.
func TestPoolsMatchAScan(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	cfg := DispatchConfig{
		LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(time.Second),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(time.Minute), MaxAttempts: 3,
	}
	d := newDispatcher(cfg, nil, zerolog.Nop(), newMetrics())
	tagChoices := []string{"a", "b", "c"}
	selectorSets := [][]string{nil, {"a"}, {"b"}, {"a", "b"}, {"c"}}

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
			out := outbox.New[*delegatev1.ManagerMessage]()
			dg, err := d.connect(&delegatev1.Hello{Name: name, Tags: tags, Capacity: int32(1 + rng.IntN(3))}, nil, out)
			if err != nil {
				t.Fatalf("connect %s: %v", name, err)
			}
			agents[name] = &agent{dg: dg, out: out}
			what = fmt.Sprintf("connect %s %v", name, tags)
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
			d.mu.Lock()
			if rng.IntN(2) == 0 {
				d.opTags[a.dg.name] = []string{tg}
			} else {
				delete(d.opTags, a.dg.name)
			}
			sends := d.tagsChangeLocked(a.dg.name)
			d.mu.Unlock()
			d.deliver(sends)
			what = "retag " + a.dg.name
		case op <= 6: // submit a sync ping
			sel := selectorSets[rng.IntN(len(selectorSets))]
			d.mu.Lock()
			want := minLoad(d, sel)
			d.mu.Unlock()
			tk, err := d.Submit(context.Background(), SubmitRequest{Kind: "ping", Selectors: sel,
				Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			d.mu.Lock()
			got := -1
			if tk.state == store.StateLeased {
				if dg := d.delegates[tk.holder]; dg != nil {
					got = len(dg.running) - 1 // its load before this task
				}
			}
			queuedAhead := d.queues[tk.selKey] != nil && d.queues[tk.selKey].l.Front().Value.(*task) != tk
			d.mu.Unlock()
			if !queuedAhead && got != want {
				t.Fatalf("step %d: task with selectors %v went to a delegate with load %d, want %d (least loaded eligible)", step, sel, got, want)
			}
			what = fmt.Sprintf("submit %v", sel)
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
// eligible delegates matching selectors, or -1.
func minLoad(d *Dispatcher, selectors []string) int {
	best := -1
	for _, dg := range d.delegates {
		if dg.eligible() && dg.matches(normalizeTags(selectors)) && (best < 0 || len(dg.running) < best) {
			best = len(dg.running)
		}
	}
	return best
}

// checkPools verifies every pool against a scan of the delegates.
func checkPools(d *Dispatcher) error {
	for key, p := range d.pools {
		want := map[*delegate]bool{}
		for _, dg := range d.delegates {
			if dg.eligible() && dg.matches(p.selectors) {
				want[dg] = true
			}
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
