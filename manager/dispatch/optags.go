package dispatch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Operator tags (smd delegate tag) belong to a delegate name within the
// scope of its delegate token (tagKey), so that they survive the agent's
// reconnects, the manager's restarts and token rotation, can be set
// before the delegate first connects, and one tenant's tags never reach
// another's delegate of the same name. They are confirmed for one
// delegate token, by name (opTagRecord.token): a delegate holding the name
// with another token does not carry them until an operator confirms them
// for its token (TagChange.Confirm), so a token that may connect under a
// name does not inherit the tags (and so the tasks) operators gave the
// delegate that used the name before. Tags set before any delegate held
// the name (or stored before tags were confirmed for tokens) are
// confirmed for the first token that holds it.
//
// The store keeps, per delegate name, a list of strings (store.Catalog
// SetDelegateTags); this file is the one place that encodes the key and
// the confirmation in it, with names that no delegate name or operator
// tag can take (both refuse ReservedSelectorPrefix):
//
//	key   name                                 (an unscoped token; as before scopes)
//	      smd:scope:ACCOUNT[/ORG[/PROJECT]]:name (a scoped token)
//	list  the operator tags, and smd:token:TOKEN-NAME once confirmed
const (
	tagScopePrefix = reservedPrefix + "scope:"
	tagTokenPrefix = reservedPrefix + "token:"
)

// tagKey names a delegate within its token's scope (zero: unscoped).
type tagKey struct {
	scope store.Scope
	name  string
}

// opTagRecord is what operators set for one tagKey. Records are
// replaced, never changed in place: a delegate may share tags.
type opTagRecord struct {
	tags []string // normalized, never empty
	// token names the delegate token the tags are confirmed for; "":
	// none yet, the next delegate to hold the name gets them.
	token string
}

func (k tagKey) storeKey() string {
	if k.scope.IsZero() {
		return k.name
	}
	return tagScopePrefix + k.scope.String() + ":" + k.name
}

// parseTagKey reads a storeKey back; false for a key no delegate can
// hold (a name made unusable by the tag rule, a malformed scope).
func parseTagKey(s string) (tagKey, bool) {
	k := tagKey{name: s}
	if rest, scoped := strings.CutPrefix(s, tagScopePrefix); scoped {
		sc, name, ok := strings.Cut(rest, ":") // a scope holds no ':'
		ps, err := connector.ParseScope(sc)
		if !ok || err != nil {
			return tagKey{}, false
		}
		k = tagKey{scope: scopes.FromProto(ps), name: name}
	}
	ok := checkTag("name", k.name, 0) == nil
	k.name = delegateName(k.name) // stored before names were normalized
	return k, ok
}

func (r *opTagRecord) stored() []string {
	out := slices.Clone(r.tags)
	if r.token != "" {
		out = append(out, tagTokenPrefix+r.token)
	}
	return out
}

// decodeOpTags reads a stored list; dropped are the entries that break
// today's tag rule (stored before it), which no delegate carries.
func decodeOpTags(list []string) (rec opTagRecord, dropped []string) {
	for _, t := range list {
		if tok, ok := strings.CutPrefix(t, tagTokenPrefix); ok {
			rec.token = tok
			continue
		}
		if checkTag("tag", t, MaxTagLen) != nil {
			dropped = append(dropped, t)
			continue
		}
		rec.tags = append(rec.tags, t)
	}
	rec.tags = normalizeTags(rec.tags)
	return rec, dropped
}

// TagChange is one change of a delegate's operator tags.
type TagChange struct {
	// Scope and Name say whose: the delegate name within the scope of its
	// delegate token (zero: an unscoped token).
	Scope store.Scope
	Name  string
	// Add and Remove are tags as the operator wrote them.
	Add, Remove []string
	// Confirm gives the tags to the token of the delegate connected as
	// Name with Scope (there must be one).
	Confirm bool
}

// TagDelegate adds and removes operator tags of a delegate name. The
// change is persisted, applied to dispatch at once if the delegate is
// connected (a waiting task it now matches is dispatched), and applied
// again whenever it reconnects with the token the tags are confirmed
// for. Tags first set while a delegate holds the name are confirmed for
// its token. It returns the operator tags and that token's name.
// Invalid input is a *TaskError (INVALID_ARGUMENT), confirming a name
// not connected one with NOT_FOUND; nothing changes then.
func (d *Dispatcher) TagDelegate(ctx context.Context, c TagChange) (tags []string, token string, err error) {
	if err := checkTag("name", c.Name, 0); err != nil {
		return nil, "", &TaskError{Code: codeInvalid, Msg: err.Error()}
	}
	for _, f := range [...]struct {
		field string
		list  []string
	}{{"add", c.Add}, {"remove", c.Remove}} {
		if err := CheckTags(f.field, f.list, MaxTagLen); err != nil {
			return nil, "", &TaskError{Code: codeInvalid, Msg: err.Error()}
		}
	}
	key := tagKey{c.Scope, delegateName(c.Name)}
	d.tagMu.Lock() // one read-modify-write at a time
	defer d.tagMu.Unlock()
	d.mu.Lock()
	cur := d.opTags[key]
	holder := d.holderTokenLocked(key) // here or on another replica
	d.mu.Unlock()
	if c.Confirm && holder == "" {
		who := fmt.Sprintf("delegate %q", key.name)
		if !c.Scope.IsZero() {
			who += " of scope " + c.Scope.String()
		}
		return nil, "", &TaskError{Code: delegatev1.Code_NOT_FOUND, Msg: who +
			" is not connected: --confirm gives its operator tags to the token of the connected delegate"}
	}
	var next opTagRecord
	if cur != nil {
		next = *cur
	}
	next.tags = normalizeTags(append(slices.Clone(next.tags), c.Add...))
	drop := newTagSet(c.Remove)
	next.tags = slices.DeleteFunc(next.tags, func(t string) bool { _, ok := drop[t]; return ok })
	switch {
	case len(next.tags) == 0:
		next.token = "" // nothing left to confirm
	case c.Confirm || next.token == "":
		next.token = holder // "" while no delegate holds the name
	}
	if err := d.store.SetDelegateTags(ctx, key.storeKey(), next.stored()); err != nil {
		return nil, "", err
	}
	d.setOpTags(key, next)
	d.tagsChanged(ctx)
	if c.Confirm {
		d.log.Info().Str("delegate", key.name).Str("token", holder).Msg("operator tags confirmed for the connected delegate's token")
	}
	return next.tags, next.token, nil
}

// setOpTags makes rec the operator tags of key in memory and applies
// them to the delegate connected as key. Called with tagMu held.
func (d *Dispatcher) setOpTags(key tagKey, rec opTagRecord) {
	d.mu.Lock()
	if len(rec.tags) == 0 {
		delete(d.opTags, key)
	} else {
		d.opTags[key] = &rec
	}
	sends := d.tagsChangeLocked(key)
	d.mu.Unlock()
	d.deliver(sends)
}

// bindOpTags confirms key's operator tags for token, the first delegate
// token to hold the name, if they are still confirmed for none (connect
// calls it, after the delegate got them). A store failure is logged:
// the binding then holds until the manager restarts.
func (d *Dispatcher) bindOpTags(key tagKey, token string) {
	d.tagMu.Lock()
	defer d.tagMu.Unlock()
	d.mu.Lock()
	cur := d.opTags[key]
	d.mu.Unlock()
	if cur == nil || cur.token != "" {
		return // changed meanwhile
	}
	next := opTagRecord{tags: cur.tags, token: token}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.store.SetDelegateTags(ctx, key.storeKey(), next.stored()); err != nil {
		d.log.Warn().Err(err).Str("delegate", key.name).Msg("could not store which delegate token the operator tags are confirmed for")
	} else {
		d.tagsChanged(ctx)
	}
	// Another token may have connected under the name meanwhile: the
	// tags are re-applied, and it loses them.
	d.setOpTags(key, next)
	d.log.Info().Str("delegate", key.name).Str("token", token).Msg("operator tags confirmed for the first delegate token to hold the name")
}

// holderLocked returns the agent connected as key, or nil.
func (d *Dispatcher) holderLocked(key tagKey) *delegate {
	dg := d.delegates[key.name]
	if dg == nil || dg.internal || dg.scope != key.scope {
		return nil
	}
	return dg
}

// applyOpTagsLocked sets dg's operator tags from its record: carried if
// confirmed for its token (or for none yet), withheld (unconfirmed)
// otherwise. It reports whether they are confirmed for no token yet, for
// the caller to confirm them for dg's (bindOpTags).
func (d *Dispatcher) applyOpTagsLocked(dg *delegate) (unbound bool) {
	rec := d.opTags[tagKey{dg.scope, dg.name}]
	dg.opTags, dg.unconfirmed = nil, nil
	switch {
	case rec == nil:
	case rec.token == "" || rec.token == dg.token:
		dg.opTags = rec.tags
	default:
		dg.unconfirmed = rec.tags
	}
	dg.tags = newTagSet(dg.declared, dg.implicit, dg.opTags)
	return rec != nil && rec.token == ""
}

// tagsChangeLocked recomputes the tags of the delegate connected as key
// after its operator tags changed, and spends its credit on what now
// matches.
func (d *Dispatcher) tagsChangeLocked(key tagKey) []send {
	dg := d.holderLocked(key)
	if dg == nil {
		return nil
	}
	d.applyOpTagsLocked(dg)
	d.joinPoolsLocked(dg)
	return d.dispatchForLocked(dg)
}

// loadTags reads the operator tags from the store (at start). Entries no
// delegate can hold or carry (stored before the tag rule) are logged and
// left out; entries stored under a name not in today's form (" Web",
// before names were normalized) are merged into, and stored again under,
// the name's form, so a later change is not undone by the old entry.
func (d *Dispatcher) loadTags(ctx context.Context) error {
	stored, err := d.store.DelegateTags(ctx)
	if err != nil {
		return err
	}
	keys := slices.Sorted(maps.Keys(stored)) // merges in a fixed order
	var moved []string
	d.mu.Lock()
	for _, k := range keys {
		key, ok := parseTagKey(k)
		if !ok {
			d.log.Warn().Str("delegate", k).Msg("ignoring stored operator tags: no delegate can hold this name")
			continue
		}
		rec, dropped := decodeOpTags(stored[k])
		if len(dropped) > 0 {
			d.log.Warn().Str("delegate", key.name).Strs("tags", dropped).Msg("ignoring stored operator tags that break the tag rule")
		}
		if prev := d.opTags[key]; prev != nil {
			rec.tags = normalizeTags(append(slices.Clone(prev.tags), rec.tags...))
			if prev.token != rec.token {
				rec.token = "" // the next delegate to hold the name confirms them
			}
		}
		if key.storeKey() != k {
			moved = append(moved, k)
		}
		if len(rec.tags) > 0 {
			d.opTags[key] = &rec
		}
	}
	d.mu.Unlock()
	for _, k := range moved {
		key, _ := parseTagKey(k)
		var list []string
		d.mu.Lock()
		if rec := d.opTags[key]; rec != nil {
			list = rec.stored()
		}
		d.mu.Unlock()
		if err := d.store.SetDelegateTags(ctx, key.storeKey(), list); err != nil {
			return err
		}
		if err := d.store.SetDelegateTags(ctx, k, nil); err != nil {
			return err
		}
		d.log.Info().Str("delegate", key.name).Msg("stored operator tags again under the delegate name's normalized form")
	}
	return nil
}
