package manager

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// TagDelegate adds and removes operator tags of the named delegate. The
// change is persisted, applied to dispatch at once if the delegate is
// connected (a waiting task it now matches is dispatched), and applied
// again whenever it reconnects. It returns the delegate's operator tags.
func (d *Dispatcher) TagDelegate(ctx context.Context, name string, add, remove []string) ([]string, error) {
	if strings.TrimSpace(name) == "" {
		return nil, &TaskError{Code: codeInvalid, Msg: "name: must not be empty"}
	}
	for i, t := range add {
		t = strings.ToLower(strings.TrimSpace(t))
		switch {
		case t == "":
			return nil, &TaskError{Code: codeInvalid, Msg: fmt.Sprintf("add[%d]: must not be empty", i)}
		case len(t) > 128:
			return nil, &TaskError{Code: codeInvalid, Msg: fmt.Sprintf("add[%d]: must be at most 128 characters", i)}
		case strings.HasPrefix(t, reservedPrefix):
			return nil, &TaskError{Code: codeInvalid, Msg: fmt.Sprintf("add[%d]: tags starting with %q are reserved", i, reservedPrefix)}
		}
	}
	d.tagMu.Lock() // one read-modify-write at a time
	defer d.tagMu.Unlock()
	d.mu.Lock()
	cur := d.opTags[name]
	d.mu.Unlock()
	next := normalizeTags(append(slices.Clone(cur), add...))
	drop := newTagSet(remove)
	next = slices.DeleteFunc(next, func(t string) bool { _, ok := drop[t]; return ok })
	if err := d.store.SetDelegateTags(ctx, name, next); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if len(next) == 0 {
		delete(d.opTags, name)
	} else {
		d.opTags[name] = next
	}
	sends := d.tagsChangeLocked(name)
	d.mu.Unlock()
	d.deliver(sends)
	return next, nil
}

// loadTags reads the operator tags from the store (at start).
func (d *Dispatcher) loadTags(ctx context.Context) error {
	tags, err := d.store.DelegateTags(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, ts := range tags {
		d.opTags[name] = normalizeTags(ts)
	}
	return nil
}
