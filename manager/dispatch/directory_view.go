package dispatch

import (
	"context"
	"maps"
	"slices"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// What a replica of a cluster shows and shares of other replicas'
// delegates (directory.go): their listing, and operator tags changed on
// any replica.

// remoteInfosLocked describes the delegates of recs that other live
// replicas hold and an operator of scope viewer may list, as
// ListDelegates does its own: their operator tags are this replica's
// (every replica has the same), their running tasks only counted.
func (d *Dispatcher) remoteInfosLocked(viewer store.Scope, recs []store.DelegateRecord) []*delegatev1.DelegateInfo {
	var out []*delegatev1.DelegateInfo
	for _, r := range recs {
		if d.dir == nil || r.Replica == d.dir.replica || !d.dir.members.Alive(r.Replica) || !scopes.Overlaps(viewer, r.Scope) {
			continue
		}
		info := &delegatev1.DelegateInfo{
			Name: r.Name, Tags: r.Tags, Version: r.Version, Hostname: r.Hostname,
			ConnectedSince: timestamp(r.ConnectedAt), LastHeartbeat: timestamp(r.UpdatedAt),
			Capacity: int32(r.Capacity), Running: int32(r.Running), RunningTasks: []string{},
			Draining: r.Draining, Connected: true, Scope: scopes.Proto(r.Scope), Replica: r.Replica,
		}
		if rec := d.opTags[tagKey{r.Scope, r.Name}]; rec != nil {
			if rec.token == "" || rec.token == r.TokenName {
				info.OperatorTags = rec.tags
			} else {
				info.UnconfirmedOperatorTags = rec.tags
			}
		}
		if scopes.Visible(viewer, r.Scope) {
			info.TokenName = r.TokenName
		}
		out = append(out, info)
	}
	return out
}

// holderTokenLocked is the token name of the delegate connected as key,
// here or (a cluster) on another live replica; "" when none is.
func (d *Dispatcher) holderTokenLocked(key tagKey) string {
	if dg := d.holderLocked(key); dg != nil {
		return dg.token
	}
	for _, r := range d.remoteLocked() {
		if r.Name == key.name && r.Scope == key.scope {
			return r.TokenName
		}
	}
	return ""
}

// tagsChanged tells the other replicas that operator tags changed (a
// cluster; best effort: a replica that misses it has the change at its
// next EventResync or restart).
func (d *Dispatcher) tagsChanged(ctx context.Context) {
	if d.dir == nil {
		return
	}
	if err := d.dir.st.Notify(ctx, store.Event{Kind: store.EventTags}); err != nil {
		d.log.Warn().Err(err).Msg("could not notify the other replicas that operator tags changed")
	}
}

// reloadTags replaces the operator tags in memory with the store's (a
// change another replica made, EventTags) and re-applies them to the
// connected delegates: one that gained tags may take waiting tasks at
// once. Tags confirmed for no token yet are confirmed for the token of
// the delegate connected here (bindOpTags).
func (d *Dispatcher) reloadTags(ctx context.Context) error {
	d.tagMu.Lock()
	stored, err := d.store.DelegateTags(ctx)
	if err != nil {
		d.tagMu.Unlock()
		return err
	}
	next := map[tagKey]*opTagRecord{}
	for _, k := range slices.Sorted(maps.Keys(stored)) {
		key, ok := parseTagKey(k)
		if !ok {
			continue // logged at start (loadTags)
		}
		rec, _ := decodeOpTags(stored[k])
		if prev := next[key]; prev != nil {
			rec.tags = normalizeTags(append(slices.Clone(prev.tags), rec.tags...))
			if prev.token != rec.token {
				rec.token = ""
			}
		}
		if len(rec.tags) > 0 {
			next[key] = &rec
		}
	}
	var sends []send
	var unbound []*delegate
	d.mu.Lock()
	d.opTags = next
	for _, dg := range d.delegates {
		if dg.internal {
			continue
		}
		tags, unconfirmed := dg.tags.sorted(), dg.unconfirmed
		if d.applyOpTagsLocked(dg) {
			unbound = append(unbound, dg)
		}
		if !slices.Equal(tags, dg.tags.sorted()) || !slices.Equal(unconfirmed, dg.unconfirmed) {
			d.joinPoolsLocked(dg)
			sends = append(sends, d.dispatchForLocked(dg)...)
		}
	}
	d.mu.Unlock()
	d.tagMu.Unlock()
	d.deliver(sends)
	for _, dg := range unbound {
		d.bindOpTags(tagKey{dg.scope, dg.name}, dg.token)
	}
	return nil
}
