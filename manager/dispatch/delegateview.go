package dispatch

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// What operators see of the connected delegates: ListDelegates (the
// cluster's, in a cluster: directory_view.go), a delegate's scope for
// TagDelegate, and the delegates a NO_ELIGIBLE_DELEGATE message names.

// ListDelegates returns the connected delegates an operator of scope
// viewer sees, by name: those whose scope overlaps viewer's (all of them
// for an unscoped viewer), each listing only the running tasks viewer
// may see. A replica of a cluster lists every live replica's delegates,
// as the store records them (directory.go), and says which replica holds
// each; it fails only when the store cannot be read.
func (d *Dispatcher) ListDelegates(ctx context.Context, viewer store.Scope) ([]*delegatev1.DelegateInfo, error) {
	var recs []store.DelegateRecord
	if d.dir != nil {
		var err error
		if recs, err = d.dir.st.Delegates(ctx); err != nil {
			return nil, err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*delegatev1.DelegateInfo, 0, len(d.delegates)+len(recs))
	for _, dg := range d.delegates {
		if dg.internal || !scopes.Overlaps(viewer, dg.scope) {
			continue
		}
		running := make([]string, 0, len(dg.running))
		for id, t := range dg.running {
			if scopes.Visible(viewer, t.scope) {
				running = append(running, id)
			}
		}
		slices.Sort(running)
		out = append(out, &delegatev1.DelegateInfo{
			Id: dg.id, Name: dg.name, Tags: dg.tags.sorted(), Version: dg.version,
			Hostname: dg.hostname, Group: dg.group, ConnectedSince: timestamp(dg.since),
			LastHeartbeat: timestamp(dg.lastHeard), Capacity: int32(dg.capacity),
			RunningTasks: running, Draining: dg.draining, Connected: true, OperatorTags: dg.opTags,
			Scope: scopes.Proto(dg.scope), UnconfirmedOperatorTags: dg.unconfirmed, Running: int32(len(running)),
		})
		if d.dir != nil {
			out[len(out)-1].Replica = d.dir.replica
		}
		if scopes.Visible(viewer, dg.scope) {
			out[len(out)-1].TokenName = dg.token
		}
	}
	out = append(out, d.remoteInfosLocked(viewer, recs)...)
	slices.SortFunc(out, func(a, b *delegatev1.DelegateInfo) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

// DelegateScope returns the scope of the connected delegate named name,
// and whether one is connected.
func (d *Dispatcher) DelegateScope(name string) (store.Scope, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dg := d.delegates[delegateName(name)]
	if dg == nil || dg.internal {
		for _, r := range d.remoteLocked() {
			if r.Name == delegateName(name) {
				return r.Scope, true
			}
		}
		return store.Scope{}, false
	}
	return dg.scope, true
}

// connectedTagsLocked describes the connected delegates for the
// NO_ELIGIBLE_DELEGATE message of a task of this scope: those whose scope
// overlaps it, which are never more than its operator may list, so the
// message names no other tenant's delegate.
func (d *Dispatcher) connectedTagsLocked(scope store.Scope) string {
	type entry struct {
		name     string
		draining bool
		scope    store.Scope
		tags     []string
		replica  string // another replica's delegate (a cluster)
	}
	var list []entry
	for n, dg := range d.delegates {
		if !dg.internal && scopes.Overlaps(scope, dg.scope) {
			list = append(list, entry{n, dg.draining, dg.scope, dg.tags.sorted(), ""})
		}
	}
	for _, r := range d.remoteLocked() {
		if scopes.Overlaps(scope, r.Scope) {
			list = append(list, entry{r.Name, r.Draining, r.Scope, r.Tags, r.Replica})
		}
	}
	if len(list) == 0 && scope.IsZero() {
		return "no delegates are connected"
	}
	if len(list) == 0 {
		return "no delegates of scope " + scope.String() + " or of a scope above or below it are connected"
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	const maxListed = 20
	s := "connected delegates:"
	for i, e := range list {
		if i == maxListed {
			s += fmt.Sprintf(" … and %d more", len(list)-maxListed)
			break
		}
		state := ""
		if e.draining {
			state = " (draining)"
		}
		sc := ""
		if !e.scope.IsZero() {
			sc = " scope " + e.scope.String()
		}
		at := ""
		if e.replica != "" {
			at = " on replica " + e.replica
		}
		s += fmt.Sprintf(" %s%s%s%s [%s];", e.name, state, sc, at, strings.Join(e.tags, ", "))
	}
	return s[:len(s)-1]
}
