package dispatch

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// task is a task the dispatcher holds in memory: every queued or leased
// task, sync or async. Final tasks leave memory; async ones stay readable
// from the store. All fields are guarded by Dispatcher.mu.
type task struct {
	id        string
	kind      string
	selectors []string
	// scope is the task's scope: only delegates serving it (serves) may
	// run it.
	scope       store.Scope
	key         string // matchKey(scope, selectors): its queue and pool
	payload     *delegatev1.TaskPayload
	async       bool
	state       store.State
	attempt     int
	maxAttempts int
	leaseID     string
	holder      string // delegate name while leased (and after, for display)
	leaseExpiry time.Time
	deadline    time.Time
	queueDL     time.Time
	createdAt   time.Time
	updatedAt   time.Time
	enqueuedAt  time.Time
	requestID   string // the caller's request id (async tasks given one)
	// size is the payload's size as submitted, counted against its
	// scope's limits (limiter.reserve) until the task leaves memory.
	size int
	seq  uint64 // FIFO order across queues
	// busy is set while a store write for this task is in flight; the
	// sweeper and result handling leave a busy task alone.
	busy bool
	// storing is set while a result under leaseID is being stored
	// (persistFinal, retried through a store outage): a copy the agent
	// sends again is not answered; the store write acknowledges it.
	storing bool
	outcome *delegatev1.Outcome
	// changed is closed and replaced at every state change (WatchTask).
	changed chan struct{}
	// done is closed when the task is final, or when it leaves memory
	// unfinished (forgetLocked).
	done chan struct{}
	elem *list.Element // position in its queue while queued
	// orderKey is the secret a mutation changes (order.go); "" for none.
	orderKey string
	// waiting is set while an ordered task waits behind an earlier task
	// of its key: queued in the store, but in no queue and without timers.
	waiting bool
	// remote is the replica a sync task was forwarded to (forward.go),
	// and stop ends that call with its cause; "" for a task run here.
	remote string
	stop   context.CancelCauseFunc
	// fwdReq is the request of a sync task queued here for want of an
	// eligible delegate in the cluster, unresolved, for a later forward
	// (forward.go, reforwardLocked); nil otherwise.
	fwdReq *SubmitRequest
	// held is set while a task not in memory (awaited, cluster mode:
	// clusterwait.go) holds the reservation its Submit made against its
	// scope's limits.
	held bool
	// origin is the replica where the caller of an async task waits
	// (store.Task.Origin; cluster mode), and gen a generated value
	// another replica delivered for that caller, until the stored final
	// state says whether it is the task's (generated.go).
	origin string
	gen    *generated
}

// queue is the FIFO of queued tasks with one scope and selector set.
type queue struct {
	scope     store.Scope
	selectors []string
	l         list.List
}

// Dispatcher matches tasks to delegates: push on credit, selectors ⊆ tags,
// the delegate's scope containing the task's, least loaded first, leases
// renewed by heartbeats (design §4).
type Dispatcher struct {
	cfg     Config
	store   store.Store
	log     zerolog.Logger
	metrics *Metrics
	now     func() time.Time
	// resolve fills a secret task's connector settings (credentials, OIDC
	// token) from its connector reference; nil sends payloads as they are.
	resolve func(ctx context.Context, taskID string, p *delegatev1.TaskPayload) (*delegatev1.TaskPayload, error)
	// sealer encrypts async payloads at rest (they may carry secret values).
	sealer *seal.Sealer
	// limits counts the unfinished tasks of each scope (nil: no limits).
	limits *Limiter
	// fwd forwards sync tasks to other replicas (forward.go) and dir is
	// the cluster-wide registry of delegates (directory.go); both nil for
	// a single manager.
	fwd Forwarder
	dir *directory
	// courier brings a generated value to the replica where its caller
	// waits (generated.go); nil for a single manager.
	courier Courier

	tagMu sync.Mutex // serializes the read-modify-writes of operator tags (optags.go)

	// outage bounds the log of store failures (storefail.go).
	outage outageLog
	// wg counts the goroutines spawn started (store writes and their
	// retries); join waits for them. spawnMu guards joined and orders
	// wg.Add before wg.Wait.
	wg      sync.WaitGroup
	spawnMu sync.Mutex
	joined  bool

	mu        sync.Mutex // guards everything below
	tasks     map[string]*task
	queues    map[string]*queue // by matchKey (scope and selectors)
	pools     map[string]*pool  // eligible delegates by matchKey (pools.go)
	queued    int
	delegates map[string]*delegate    // connected, by name
	opTags    map[tagKey]*opTagRecord // operator tags by scope and delegate name (mirrors the store)
	seq       uint64
	closed    bool
	// stopping is closed by close: streams end so agents reconnect.
	stopping chan struct{}
	// outboxPeak is the most messages any delegate stream's outbox held
	// (smd_delegate_outbox_peak_messages).
	outboxPeak int
	// chains holds the unfinished ordered tasks by order key, oldest
	// first (order.go).
	chains map[string][]*task

	// cl is the cluster mode (cluster.go); nil for a single manager. Set
	// before the dispatcher runs.
	cl *clusterState
}

// Errors of the dispatcher.
var (
	// ErrTaskNotFound: no such task.
	ErrTaskNotFound = errors.New("task not found")
	// ErrShuttingDown: the manager is stopping and takes no new tasks.
	ErrShuttingDown = errors.New("manager is shutting down")
	// ErrNameInUse: a delegate of another agent process is connected
	// under the name a new stream announces; it is not replaced (connect,
	// wrapped by NameHeldError).
	ErrNameInUse = errors.New("the delegate name is held by a connected delegate; delegate names must be unique per manager")
	// ErrRequestReused: a request id came again with another request
	// than the one it was first given with (wrapped by RequestReusedError).
	ErrRequestReused = errors.New("request_id reused for a different request")
	// ErrNotReplica: a call only a replica of a cluster answers, made
	// to a single manager (AcceptGenerated).
	ErrNotReplica = errors.New("this manager is not a replica of a cluster")
	// ErrNotGenerated: a delivery that is not a generated value (not an
	// OK outcome carrying a secret value, or without a task or lease
	// id; AcceptGenerated).
	ErrNotGenerated = errors.New("not the outcome of a create that generated its value")
)

// RequestReusedError is Submit's error for a request id its caller used
// before for another request: the task of the first one is not returned
// and nothing is submitted. It wraps ErrRequestReused.
type RequestReusedError struct {
	RequestID string
	// TaskID and Kind are the first request's task.
	TaskID, Kind string
}

func (e *RequestReusedError) Error() string {
	return fmt.Sprintf("request_id %q was used for a different request (task %s, %s); a new request needs a new request_id",
		e.RequestID, e.TaskID, e.Kind)
}

// Unwrap returns ErrRequestReused.
func (e *RequestReusedError) Unwrap() error { return ErrRequestReused }

func New(cfg Config, st store.Store, log zerolog.Logger, m *Metrics) *Dispatcher {
	return &Dispatcher{
		cfg:       cfg,
		store:     st,
		log:       log,
		metrics:   m,
		now:       time.Now,
		tasks:     map[string]*task{},
		queues:    map[string]*queue{},
		pools:     map[string]*pool{},
		chains:    map[string][]*task{},
		delegates: map[string]*delegate{},
		opTags:    map[tagKey]*opTagRecord{},
		stopping:  make(chan struct{}),
	}
}

// forgetLocked removes t from memory, gives back what it counted
// against its scope's limits, and wakes its waiters: WatchTask callers
// (changed) read it from the store from then on; callers waiting for it
// to end (done) are released, whether or not it is final (a task that
// leaves memory unfinished runs elsewhere).
func (d *Dispatcher) forgetLocked(t *task) {
	if d.tasks[t.id] == t {
		delete(d.tasks, t.id)
		d.limits.release(t.scope, t.size)
	}
	if t.held {
		d.limits.release(t.scope, t.size)
		t.held = false
	}
	// The next mutation of its secret may run (order.go).
	d.unchainLocked(t)
	d.notifyLocked(t)
	if d.awaitLocked(t) {
		return // a replica's unfinished task: it runs elsewhere (clusterwait.go)
	}
	select {
	case <-t.done:
	default:
		close(t.done)
	}
}

// notifyLocked wakes watchers of t.
func (d *Dispatcher) notifyLocked(t *task) {
	close(t.changed)
	t.changed = make(chan struct{})
}
