// Package store declares the manager's durable state: tasks and their leases
// (Store), and the configuration beside them (Catalog: connectors, builtin
// credentials, OIDC signing keys, operator delegate tags). Implementations
// live in packages named after what they wrap (manager/store/bolt,
// manager/store/postgres) and all pass the one conformance suite in
// manager/store/storetest.
//
// Of tasks, the store holds the asynchronous ones only. Sync reads
// (GetSecret, ListSecrets, TestConnector, sync pings) never touch it.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Errors returned by Store implementations. Compare with errors.Is.
var (
	// ErrNotFound: no task, connector, credential or signing key with that
	// key.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a task with that id, a task with that request (then as a
	// *DuplicateRequestError), or a connector with that scope and id,
	// already exists.
	ErrExists = errors.New("store: already exists")
	// ErrConflict: the task is not in the state the call requires (a claim
	// of a task that is not queued, a completion under a lease that is not
	// the current one, a change to a final task). This is the fence that
	// makes a task complete exactly once.
	ErrConflict = errors.New("store: conflict")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrDefaultTaken: another connector is already the default of the scope.
	ErrDefaultTaken = errors.New("store: the scope already has a default connector")
	// ErrUnavailable: the store could not be reached or did not answer in
	// time (a lost connection, a server restarting, a call timeout,
	// PostgreSQL's manager lock being re-taken). It is transient: the
	// same call may succeed later. Whether a write that failed so took
	// effect is unknown; read the row again to find out. Implementations
	// mark such errors with Unavailable; test with IsUnavailable.
	ErrUnavailable = errors.New("store: unavailable")
)

// unavailableError is an error marked transient by Unavailable.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }

// Unwrap returns the cause; Is matches ErrUnavailable as well.
func (e *unavailableError) Unwrap() error { return e.err }

// Is reports target == ErrUnavailable.
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unavailable marks err as a transient failure of the store: the result
// has err's message, wraps err, and matches ErrUnavailable. Unavailable(nil)
// is nil.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return &unavailableError{err: err}
}

// IsUnavailable reports whether err is a transient failure of the store:
// one marked with ErrUnavailable, a call that ran out of time
// (context.DeadlineExceeded: callers test their own context first), or a
// network error on the way to the store. Every other error is permanent
// for the call that returned it: ErrNotFound, ErrExists, ErrConflict,
// ErrClosed, ErrDefaultTaken, invalid arguments, undecodable rows.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF)
}

// State is a task's state.
type State string

// Task states. Succeeded and Failed are final.
const (
	StateQueued    State = "queued"
	StateLeased    State = "leased"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
)

// Final reports whether s is a final state.
func (s State) Final() bool { return s == StateSucceeded || s == StateFailed }

// Request names the call that submitted a task, so that a retry of the
// call finds the task instead of making a second one. Owner and ID
// together are unique among stored tasks while ID is not empty: CreateTask
// refuses a second task with the same pair (DuplicateRequestError), and
// the pair is free again once the task is deleted (retention).
type Request struct {
	// Owner is the namespace ID lives in, so that callers of different
	// tenants never collide: the manager uses the operator token's scope
	// and name. Opaque to the store, compared byte for byte.
	Owner string
	// ID is the caller's request id. Empty: the task has none, and
	// nothing is indexed.
	ID string
	// Hash is a digest of the request, stored to tell a retry (the same
	// hash) from another request reusing the id. Opaque to the store; it
	// is keyed, so it reveals nothing of the secret values in the request.
	Hash []byte
}

// DuplicateRequestError is CreateTask's error when a task with the same
// Request.Owner and Request.ID exists: the call is a retry of the one that
// created Task, or a reuse of its id. It wraps ErrExists.
type DuplicateRequestError struct {
	// Task is the existing task, as stored when CreateTask ran.
	Task *Task
}

func (e *DuplicateRequestError) Error() string {
	return fmt.Sprintf("store: create task: request id %q is taken by task %s", e.Task.Request.ID, e.Task.ID)
}

// Unwrap returns ErrExists.
func (e *DuplicateRequestError) Unwrap() error { return ErrExists }

// Task is a persisted asynchronous task.
//
// Times round-trip with at least millisecond precision (an implementation
// may keep more, PostgreSQL keeps microseconds) and without their location:
// compare them with time.Time.Equal. A zero time stays zero.
type Task struct {
	ID   string
	Kind string // "ping", "secret.create", ...
	// Selectors are normalized (trimmed, lower-cased, sorted, unique).
	Selectors []string
	// Scope is the scope the task belongs to (a secret task's connector's,
	// a ping's operator's); only delegates serving it may run the task.
	// The zero Scope means none: any delegate may.
	Scope Scope
	// Payload is the marshaled delegate.v1.TaskPayload, sealed by the
	// caller (it may hold secret values). Once the task is final it is
	// what Complete was given in Final.Payload: the manager's holds no
	// secret value.
	Payload []byte
	// Request is the call that submitted the task, when the caller gave a
	// request id: unique by Owner and ID (see Request).
	Request Request
	State   State
	// Attempt counts dispatches; 0 while never dispatched.
	Attempt     int
	MaxAttempts int
	// LeaseID and Delegate are set while leased, and kept once final.
	LeaseID  string
	Delegate string
	// Code is the outcome code name ("OK", "DELEGATE_LOST", ...) once final.
	Code string
	// Outcome is the marshaled delegate.v1.Outcome once final.
	Outcome []byte
	// CreatedAt orders tasks (ListUnfinished, ListTasks). CreateTask sets
	// it to the current time if it is zero.
	CreatedAt time.Time
	// UpdatedAt is when the task last changed: CreateTask sets it to
	// CreatedAt if it is zero; Claim, Requeue and Complete set it to the
	// current time.
	UpdatedAt time.Time
	// Deadline is when the task fails TIMEOUT if it has not completed.
	Deadline time.Time
	// QueueDeadline is when a queued task fails NO_ELIGIBLE_DELEGATE if no
	// delegate took it.
	QueueDeadline time.Time
	// OrderKey names the secret a mutation changes (its region and full
	// AWS name): the unfinished tasks of one key run one at a time, in
	// CreatedAt order. Empty for a task that is not ordered.
	OrderKey string
	// Owner is the replica whose dispatcher holds the task, "" while it
	// waits to be pulled (cluster.go). A single manager leaves it empty.
	Owner string
	// LeaseExpiry is when the current lease lapses unless renewed
	// (cluster.go: durable leases); zero when the store does not keep it.
	LeaseExpiry time.Time
	// Origin is the replica that took the call submitting the task, where
	// its caller waits (cluster.go); stored as given, never changed. A
	// replica that completes a create whose outcome carries a generated
	// value sends the value there over the peer link (the value itself
	// is never stored). A single manager leaves it empty.
	Origin string
}

// Lease is a claim of a queued task by a delegate.
type Lease struct {
	ID       string
	Delegate string
	// Attempt is the attempt number this dispatch starts (previous + 1).
	Attempt int
}

// Final is how a task ends.
type Final struct {
	State   State // StateSucceeded or StateFailed
	Code    string
	Outcome []byte
	// Payload replaces the task's payload, in the same transition: what
	// is kept of it once the task is final. A finished task needs no
	// secret value, so the manager passes its payload without them
	// (delegatev1.Redact); nil keeps no payload at all.
	Payload []byte
}

// ScrubFunc returns what to keep of the payload of final task id, for
// Store.ScrubFinished. Its error stops the scrub.
type ScrubFunc func(id string, payload []byte) ([]byte, error)

// Filter selects tasks for List.
type Filter struct {
	// States, when not empty, keeps only tasks in one of these states.
	States []State
	// Limit caps the number of tasks returned; 0 means no limit.
	Limit int
	// Scope, when not zero, keeps only tasks at that scope or below it
	// (Scope.Contains); tasks without a scope are left out.
	Scope Scope
	// After, when not nil, keeps only the tasks that follow it in the
	// list's order (newest first): created before After.CreatedAt, or at
	// that instant with a smaller id. A page of a listing starts after
	// the last task of the previous page (CursorOf), so that paging
	// returns every task once; tasks created meanwhile come before the
	// first page and are not in the later ones. The task After names need
	// not exist any more.
	After *Cursor
}

// Cursor is a position in ListTasks' order: a task's CreatedAt, as
// stored, and its id.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// CursorOf returns the position of t, to list the tasks after it.
func CursorOf(t *Task) Cursor { return Cursor{CreatedAt: t.CreatedAt, ID: t.ID} }

// Store is the manager's durable store: tasks, and through the embedded
// Catalog its configuration, so that one value (one bolt file, one
// PostgreSQL database) serves both. Every method is safe for concurrent use.
// Methods return ErrClosed after Close, and an error matching
// ErrUnavailable (IsUnavailable) when the store cannot be reached: a
// write that fails so may or may not have taken effect.
type Store interface {
	Catalog

	// CreateTask persists a new task in StateQueued. It returns ErrExists if
	// the id is taken. If t.Request.ID is not empty and a task with the
	// same Request.Owner and Request.ID exists, it stores nothing and
	// returns a *DuplicateRequestError holding that task (it wraps
	// ErrExists); the check and the insert are one atomic step, so of
	// concurrent calls with one request exactly one creates a task. When
	// it returns nil the task is durable. It keeps no reference to t or
	// its slices.
	CreateTask(ctx context.Context, t *Task) error

	// GetTask returns the task, or ErrNotFound.
	GetTask(ctx context.Context, id string) (*Task, error)

	// ListTasks returns tasks matching f, newest first (by CreatedAt,
	// then id descending), from f.After on when it is set.
	ListTasks(ctx context.Context, f Filter) ([]*Task, error)

	// ListUnfinished returns every queued or leased task, oldest first: what
	// a restarted manager recovers.
	ListUnfinished(ctx context.Context) ([]*Task, error)

	// Claim moves a queued task to StateLeased under l. It returns
	// ErrNotFound for an unknown id and ErrConflict if the task is not
	// queued (another replica or dispatch took it, or it is final).
	Claim(ctx context.Context, id string, l Lease) error

	// Requeue moves a leased task back to StateQueued, if leaseID is still
	// its lease (ErrConflict otherwise), keeping its attempt count and
	// clearing LeaseID and Delegate. It returns ErrNotFound for an unknown
	// id.
	Requeue(ctx context.Context, id, leaseID string) error

	// Complete makes a task final. If leaseID is not empty it must be the
	// task's current lease and the task must be leased (ErrConflict
	// otherwise: a stale result). If leaseID is empty the task may be
	// queued or leased (queue timeout, deadline, attempts exhausted). A
	// task that is already final gives ErrConflict, an unknown id
	// ErrNotFound. LeaseID and Delegate are kept; the payload becomes
	// f.Payload in the same atomic step, so no final task ever holds the
	// payload it was created with.
	Complete(ctx context.Context, id, leaseID string, f Final) error

	// ScrubFinished is the migration of tasks that became final before
	// Complete replaced payloads (an older smd kept them whole): it calls
	// scrub with the id and payload of each such task and stores what
	// scrub returns in its place, once; a task Complete made final, and
	// an unfinished one, is never passed. It returns how many payloads it
	// replaced. It works in chunks and checks ctx between them; an error
	// (scrub's or ctx's) stops it, with the count so far, and a later
	// call goes on where it stopped.
	ScrubFinished(ctx context.Context, scrub ScrubFunc) (int, error)

	// Close releases the store. A second Close returns ErrClosed.
	Close() error
}
