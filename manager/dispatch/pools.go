package dispatch

import (
	"strconv"
	"strings"

	"container/heap"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// poolIdle is how long a pool with no task of its scope and selector set
// is kept.
const poolIdle = 10 * time.Minute

// pool indexes the connected delegates that match one scope and selector
// set (they serve the scope and carry the selectors), so that a new task
// finds the least loaded eligible delegate in O(log n) instead of
// scanning every delegate (with 10,000 delegates a scan per task took
// milliseconds under the dispatcher's lock). Its heap holds the matching
// delegates that are eligible (credit, not draining), fewest running
// tasks first; a matching delegate that is not eligible is a member
// outside the heap. Pools are made on the first task of a scope and
// selector set and dropped after poolIdle without one. A delegate's scope
// comes from its token and never changes while it is connected, so only
// connecting and retagging change which pools it belongs to. Guarded by
// Dispatcher.mu.
type pool struct {
	key       string // matchKey(scope, selectors)
	scope     store.Scope
	selectors []string
	heap      []*delegate
	lastUsed  time.Time
}

// heap.Interface over pool.heap; each delegate keeps its index in
// delegate.pools (-1: a member outside the heap).
func (p *pool) Len() int           { return len(p.heap) }
func (p *pool) Less(i, j int) bool { return len(p.heap[i].running) < len(p.heap[j].running) }
func (p *pool) Swap(i, j int) {
	p.heap[i], p.heap[j] = p.heap[j], p.heap[i]
	p.heap[i].pools[p] = i
	p.heap[j].pools[p] = j
}
func (p *pool) Push(x any) {
	dg := x.(*delegate)
	dg.pools[p] = len(p.heap)
	p.heap = append(p.heap, dg)
}
func (p *pool) Pop() any {
	n := len(p.heap) - 1
	dg := p.heap[n]
	p.heap[n] = nil
	p.heap = p.heap[:n]
	dg.pools[p] = -1
	return dg
}

// poolLocked returns the pool of a scope and selector set, making it on
// first use with one scan of the connected delegates.
func (d *Dispatcher) poolLocked(key string, scope store.Scope, selectors []string) *pool {
	p := d.pools[key]
	if p == nil {
		p = &pool{key: key, scope: scope, selectors: selectors}
		d.pools[key] = p
		for _, dg := range d.delegates {
			if dg.matches(scope, selectors) {
				dg.pools[p] = -1
				d.placeLocked(dg, p)
			}
		}
	}
	p.lastUsed = d.now()
	return p
}

// leastLoadedLocked returns the least loaded eligible delegate for the
// scope and selector set, or nil.
func (d *Dispatcher) leastLoadedLocked(key string, scope store.Scope, selectors []string) *delegate {
	p := d.poolLocked(key, scope, selectors)
	for len(p.heap) > 0 {
		dg := p.heap[0]
		if d.delegates[dg.name] == dg && dg.eligible() {
			return dg
		}
		// Every change of credit, load or connection re-places the
		// delegate, so this does not happen; if it did, heal and go on.
		d.log.Warn().Str("delegate", dg.name).Msg("dispatcher: ineligible delegate at the head of its pool")
		heap.Remove(p, 0)
	}
	return nil
}

// placeLocked puts dg where it belongs in p, of which it is a member: in
// the heap at its load when connected and eligible, out of it otherwise.
func (d *Dispatcher) placeLocked(dg *delegate, p *pool) {
	i := dg.pools[p]
	in := d.delegates[dg.name] == dg && dg.eligible()
	switch {
	case in && i >= 0:
		heap.Fix(p, i)
	case in:
		heap.Push(p, dg)
	case i >= 0:
		heap.Remove(p, i)
	}
}

// touchLocked re-places dg in its pools after its credit, its running
// tasks or its draining changed.
func (d *Dispatcher) touchLocked(dg *delegate) {
	for p := range dg.pools {
		d.placeLocked(dg, p)
	}
}

// joinPoolsLocked makes a newly connected or retagged dg a member of
// every pool whose scope it serves and whose selectors it carries.
func (d *Dispatcher) joinPoolsLocked(dg *delegate) {
	d.leavePoolsLocked(dg)
	dg.pools = map[*pool]int{}
	for _, p := range d.pools {
		if dg.matches(p.scope, p.selectors) {
			dg.pools[p] = -1
			d.placeLocked(dg, p)
		}
	}
}

// leavePoolsLocked takes dg out of every pool (it disconnected, was
// replaced, or its tags changed).
func (d *Dispatcher) leavePoolsLocked(dg *delegate) {
	for p, i := range dg.pools {
		if i >= 0 {
			heap.Remove(p, i)
		}
	}
	dg.pools = nil
}

// prunePoolsLocked drops pools whose scope and selector set had no task
// for poolIdle and none queued, so that one-off selectors do not pile up.
func (d *Dispatcher) prunePoolsLocked(now time.Time) {
	for key, p := range d.pools {
		if now.Sub(p.lastUsed) < poolIdle || d.queues[key] != nil {
			continue
		}
		for _, dg := range d.delegates {
			delete(dg.pools, p)
		}
		delete(d.pools, key)
	}
}

// matchKey keys the queues and pools: one per scope and selector set.
// Each part is length-prefixed, so two different selector lists never
// share a key whatever characters they hold (["a\x00b"] and ["a", "b"]
// once did): the key does not depend on the tag rule being enforced.
func matchKey(scope store.Scope, selectors []string) string {
	var b strings.Builder
	part := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	part(scope.String())
	for _, s := range selectors {
		part(s)
	}
	return b.String()
}
