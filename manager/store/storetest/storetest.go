// Package storetest is the conformance suite that every store.Store
// implementation runs from its own tests, in the manner of litestream's
// RunWithReplicaClient:
//
//	func TestConformance(t *testing.T) {
//		storetest.RunConformance(t, func(t *testing.T, dir string) store.Store {
//			db, err := bolt.Open(filepath.Join(dir, bolt.FileName), bolt.Options{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return db
//		})
//	}
//
// The suite tests the contract written in package store's doc comments and
// nothing else, so that bolt and PostgreSQL pass the same tests.
//
// # Times
//
// Times the suite sets are whole milliseconds in a non-UTC zone, and it
// compares times with time.Time.Equal after truncating both sides to the
// millisecond: an implementation must keep at least millisecond precision
// and may drop the location. Times a store sets itself (a defaulted
// CreatedAt, UpdatedAt after a change) must lie within clockSkew of the
// test's clock around the call, to allow for a store that reads another
// machine's clock.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smdelegate/smdelegate/manager/store"
)

// OpenFunc opens the store that lives at dir, calling t.Fatal if it cannot.
//
// The suite calls it with a fresh t.TempDir() for each sub-test, and calls it
// a second time with the same dir after closing the first store: the new
// store must see everything the first one committed. A store that does not
// live in a directory (PostgreSQL) uses dir only as a name for its data, e.g.
// to pick or create a schema, and must start empty for a dir it has not seen.
//
// The suite closes every store it opens (at the latest in a t.Cleanup), so
// open must not register a Close of its own; it may register cleanups for
// anything else it creates.
type OpenFunc func(t *testing.T, dir string) store.Store

// clockSkew is how far a time set by the store may lie outside the test's
// own clock readings around the call.
const clockSkew = time.Second

// base is the CreatedAt of fixture tasks: whole milliseconds, in a zone that
// is not UTC or Local, so that a store that compares with == or keeps the
// location by accident is noticed.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535_000_000, time.FixedZone("UTC+2", 2*60*60))

// taskCmp compares tasks as the contract promises them: empty and nil slices
// alike, times equal to the millisecond whatever their location.
var taskCmp = cmp.Options{
	cmpopts.EquateEmpty(),
	// Payloads are compared whole: cmp's element-wise walk of a large one
	// takes seconds under the race detector. (The filter keeps this
	// disjoint from EquateEmpty, which handles two empty slices.)
	cmp.FilterValues(func(x, y []byte) bool { return len(x) > 0 || len(y) > 0 }, cmp.Comparer(bytes.Equal)),
	cmp.Comparer(func(a, b time.Time) bool {
		return a.Truncate(time.Millisecond).Equal(b.Truncate(time.Millisecond))
	}),
}

// ignoreUpdated compares tasks without UpdatedAt, which the store sets from
// its clock and checkRecent checks on its own.
var ignoreUpdated = cmpopts.IgnoreFields(store.Task{}, "UpdatedAt")

// RunConformance runs the conformance suite against the stores open returns.
// Its sub-tests run in parallel, each with stores of its own.
func RunConformance(t *testing.T, open OpenFunc) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open OpenFunc)
	}{
		{"CreateGet", testCreateGet},
		{"CreateDefaults", testCreateDefaults},
		{"CreateNotRetained", testCreateNotRetained},
		{"CreateExists", testCreateExists},
		{"GetNotFound", testGetNotFound},
		{"Claim", testClaim},
		{"Requeue", testRequeue},
		{"Complete", testComplete},
		{"CompleteTwice", testCompleteTwice},
		{"ScrubFinished", testScrubFinished},
		{"Lifecycle", testLifecycle},
		{"ListUnfinished", testListUnfinished},
		{"ListTasks", testListTasks},
		{"ListTasksScope", testListTasksScope},
		{"ListTasksPages", testListTasksPages},
		{"ListEmpty", testListEmpty},
		{"RequestDuplicate", testRequestDuplicate},
		{"RequestKeys", testRequestKeys},
		{"RequestDurable", testRequestDurable},
		{"ConcurrentRequest", testConcurrentRequest},
		{"ConcurrentCreate", testConcurrentCreate},
		{"ConcurrentClaim", testConcurrentClaim},
		{"ConcurrentComplete", testConcurrentComplete},
		{"ConcurrentRequeueComplete", testConcurrentRequeueComplete},
		{"Durable", testDurable},
		{"Closed", testClosed},

		{"ConnectorCreateGet", testConnectorCreateGet},
		{"ConnectorNotRetained", testConnectorNotRetained},
		{"ConnectorExists", testConnectorExists},
		{"ConnectorNotFound", testConnectorNotFound},
		{"ConnectorUpdate", testConnectorUpdate},
		{"ConnectorDefault", testConnectorDefault},
		{"ConnectorScopes", testConnectorScopes},
		{"ConnectorList", testConnectorList},
		{"AllConnectors", testAllConnectors},
		{"ConcurrentCreateConnector", testConcurrentCreateConnector},
		{"CredentialPutGet", testCredentialPutGet},
		{"CredentialReplace", testCredentialReplace},
		{"CredentialNotRetained", testCredentialNotRetained},
		{"CredentialNotFound", testCredentialNotFound},
		{"CredentialList", testCredentialList},
		{"SigningKeys", testSigningKeys},
		{"SigningKeyNotRetained", testSigningKeyNotRetained},
		{"DelegateTags", testDelegateTags},
		{"CatalogDurable", testCatalogDurable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open)
		})
	}
}

// mustOpen opens a store in a fresh directory and closes it when t ends.
func mustOpen(t *testing.T, open OpenFunc) store.Store {
	t.Helper()
	return mustOpenDir(t, open, t.TempDir())
}

// mustOpenDir opens the store at dir and closes it when t ends, unless the
// test closed it first.
func mustOpenDir(t *testing.T, open OpenFunc, dir string) store.Store {
	t.Helper()
	s := open(t, dir)
	if s == nil {
		t.Fatalf("open(%q) returned a nil store", dir)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close() = %v", err)
		}
	})
	return s
}

// newTask returns a task with every field set, created at created.
func newTask(id string, created time.Time) *store.Task {
	return &store.Task{
		ID:            id,
		Kind:          "secret.create",
		Selectors:     []string{"eu-west-1", "prod"},
		Payload:       []byte("payload of " + id),
		State:         store.StateQueued,
		MaxAttempts:   3,
		CreatedAt:     created,
		UpdatedAt:     created,
		Deadline:      created.Add(60 * time.Second),
		QueueDeadline: created.Add(30 * time.Second),
		// Every transition test compares whole tasks, so they also
		// check that a task keeps its scope, request and order key
		// through them.
		Scope:    store.Scope{Account: "acme", Org: "payments", Project: "checkout"},
		Request:  store.Request{Owner: "acme:ci", ID: "req-" + id, Hash: []byte("hash of " + id)},
		OrderKey: "eu-west-1 team/" + id,
	}
}

// leaseFor is the lease put gives a task it claims.
func leaseFor(id string) store.Lease {
	return store.Lease{ID: "lease-" + id, Delegate: "delegate-" + id, Attempt: 1}
}

// put creates task and drives it into st: leased under leaseFor(task.ID),
// succeeded by completing that lease, failed by a completion without one.
// It returns the task as stored.
func put(t *testing.T, s store.Store, task *store.Task, st store.State) *store.Task {
	t.Helper()
	ctx := t.Context()
	mustCreate(t, s, task)
	l := leaseFor(task.ID)
	switch st {
	case store.StateQueued:
	case store.StateLeased:
		mustClaim(t, s, task.ID, l)
	case store.StateSucceeded:
		mustClaim(t, s, task.ID, l)
		f := store.Final{State: st, Code: "OK", Outcome: []byte("ok"), Payload: []byte("kept of " + task.ID)}
		if err := s.Complete(ctx, task.ID, l.ID, f); err != nil {
			t.Fatalf("Complete(%q, %q) = %v, want nil", task.ID, l.ID, err)
		}
	case store.StateFailed:
		f := store.Final{State: st, Code: "NO_ELIGIBLE_DELEGATE", Outcome: []byte("no delegate"), Payload: []byte("kept of " + task.ID)}
		if err := s.Complete(ctx, task.ID, "", f); err != nil {
			t.Fatalf("Complete(%q, \"\") = %v, want nil", task.ID, err)
		}
	default:
		t.Fatalf("put: unknown state %q", st)
	}
	return mustGet(t, s, task.ID)
}

func mustCreate(t *testing.T, s store.Store, task *store.Task) {
	t.Helper()
	if err := s.CreateTask(t.Context(), task); err != nil {
		t.Fatalf("CreateTask(%q) = %v, want nil", task.ID, err)
	}
}

func mustClaim(t *testing.T, s store.Store, id string, l store.Lease) {
	t.Helper()
	if err := s.Claim(t.Context(), id, l); err != nil {
		t.Fatalf("Claim(%q, %+v) = %v, want nil", id, l, err)
	}
}

func mustGet(t *testing.T, s store.Store, id string) *store.Task {
	t.Helper()
	got, err := s.GetTask(t.Context(), id)
	if err != nil {
		t.Fatalf("GetTask(%q) = %v, want nil", id, err)
	}
	if got == nil {
		t.Fatalf("GetTask(%q) = nil task, nil error", id)
	}
	return got
}

// checkErr fails t unless err matches want (nil, or a sentinel by errors.Is).
func checkErr(t *testing.T, call string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s = %v, want nil", call, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s = %v, want %v", call, err, want)
	}
}

// checkRecent fails t unless got lies within [before, after] widened by
// clockSkew.
func checkRecent(t *testing.T, what string, got, before, after time.Time) {
	t.Helper()
	if got.Before(before.Add(-clockSkew)) || got.After(after.Add(clockSkew)) {
		t.Errorf("%s = %v, want between %v and %v", what, got, before, after)
	}
}

// checkUnchanged fails t if the task differs from want: a failed call must
// not have changed anything.
func checkUnchanged(t *testing.T, s store.Store, want *store.Task) {
	t.Helper()
	got := mustGet(t, s, want.ID)
	if diff := cmp.Diff(want, got, taskCmp); diff != "" {
		t.Errorf("GetTask(%q) after a failed call changed (-want +got):\n%s", want.ID, diff)
	}
}

// ids returns the ids of tasks, in order.
func ids(tasks []*store.Task) []string {
	out := make([]string, 0, len(tasks))
	for _, task := range tasks {
		out = append(out, task.ID)
	}
	return out
}

// eachMethod calls every Store method but Close once, Catalog methods
// included, for tests that expect the same error from all of them.
func eachMethod(ctx context.Context, s store.Store, id string) map[string]error {
	_, getErr := s.GetTask(ctx, id)
	_, listErr := s.ListTasks(ctx, store.Filter{})
	_, unfinishedErr := s.ListUnfinished(ctx)
	_, getConnErr := s.GetConnector(ctx, acct, id)
	_, defaultErr := s.DefaultConnector(ctx, acct)
	_, listConnErr := s.ListConnectors(ctx, acct)
	_, allConnErr := s.AllConnectors(ctx)
	_, getCredErr := s.GetCredential(ctx, acct, id)
	_, listCredErr := s.ListCredentials(ctx, acct)
	_, listKeysErr := s.ListSigningKeys(ctx)
	_, tagsErr := s.DelegateTags(ctx)
	_, scrubErr := s.ScrubFinished(ctx, func(_ string, p []byte) ([]byte, error) { return p, nil })
	return map[string]error{
		"CreateTask":     s.CreateTask(ctx, newTask(id+"-new", base)),
		"GetTask":        getErr,
		"ListTasks":      listErr,
		"ListUnfinished": unfinishedErr,
		"Claim":          s.Claim(ctx, id, leaseFor(id)),
		"Requeue":        s.Requeue(ctx, id, leaseFor(id).ID),
		"Complete":       s.Complete(ctx, id, "", store.Final{State: store.StateFailed, Code: "INTERNAL"}),
		"ScrubFinished":  scrubErr,

		"CreateConnector":  s.CreateConnector(ctx, newConnector(acct, id+"-new", false)),
		"UpdateConnector":  s.UpdateConnector(ctx, newConnector(acct, id, false)),
		"GetConnector":     getConnErr,
		"DefaultConnector": defaultErr,
		"ListConnectors":   listConnErr,
		"AllConnectors":    allConnErr,
		"DeleteConnector":  s.DeleteConnector(ctx, acct, id),
		"PutCredential":    s.PutCredential(ctx, newCredential(acct, id+"-new")),
		"GetCredential":    getCredErr,
		"ListCredentials":  listCredErr,
		"DeleteCredential": s.DeleteCredential(ctx, acct, id),
		"PutSigningKey":    s.PutSigningKey(ctx, newSigningKey(id+"-new", base)),
		"ListSigningKeys":  listKeysErr,
		"DeleteSigningKey": s.DeleteSigningKey(ctx, id),
		"SetDelegateTags":  s.SetDelegateTags(ctx, id, []string{"tag"}),
		"DelegateTags":     tagsErr,
	}
}

// call formats a call for messages.
func call(name string, args ...any) string {
	s := name + "("
	for i, a := range args {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", fmt.Sprint(a))
	}
	return s + ")"
}
