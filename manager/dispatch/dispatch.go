package dispatch

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/scopes"
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

// SubmitRequest is a task to run.
type SubmitRequest struct {
	Kind      string
	Selectors []string
	// Scope confines the task to delegates serving it (zero: any). A
	// secret task's scope is always its connector's, whatever is set here.
	Scope   store.Scope
	Payload *delegatev1.TaskPayload
	// Async tasks are persisted before Submit returns and survive manager
	// restarts; sync tasks live only in memory while the caller waits.
	Async bool
	// OrderKey, on an async task, names the secret it changes (order.go):
	// it runs only once the tasks submitted before it with the same key
	// are final. Sync tasks ignore it.
	OrderKey string
	// Request, when its ID is set, makes an async submission idempotent:
	// it is stored with the task, and a submission with the same Owner
	// and ID gets the task the first one made (if the Hash is the same)
	// or a RequestReusedError. Sync tasks ignore it.
	Request store.Request

	// forwardedID is set on a sync task another replica forwarded
	// (RunForwarded): it runs under that id, here, never forwarded again.
	forwardedID string
}

// submit is Submit, returning the task itself (for the dispatcher and its
// tests).
func (d *Dispatcher) submit(ctx context.Context, req SubmitRequest) (*task, error) {
	now := d.now()
	id := req.forwardedID
	if id == "" {
		id = ids.New()
	}
	t := &task{
		id:          id,
		kind:        req.Kind,
		selectors:   normalizeTags(req.Selectors),
		scope:       taskScope(req.Scope, req.Payload),
		payload:     req.Payload,
		async:       req.Async,
		state:       store.StateQueued,
		maxAttempts: d.cfg.MaxAttempts,
		createdAt:   now,
		updatedAt:   now,
		deadline:    now.Add(d.cfg.TaskDeadline.D()),
		changed:     make(chan struct{}),
		done:        make(chan struct{}),
	}
	t.key = matchKey(t.scope, t.selectors)
	if req.Async { // only stored tasks are ordered (order.go)
		t.orderKey = req.OrderKey
	}
	t.size = proto.Size(req.Payload)
	if req.forwardedID != "" {
		// Reserved by the replica that forwarded it: counted, never refused.
		d.limits.add(t.scope, t.size)
	} else if err := d.limits.reserve(ctx, t.scope, t.size); err != nil {
		return nil, err
	}
	held := true // the reservation, until the task is in memory
	defer func() {
		if held {
			d.limits.release(t.scope, t.size)
		}
	}()
	if !req.Async && d.fwd != nil {
		d.mu.Lock()
		targets := d.forwardTargetsLocked(t, req.forwardedID != "")
		d.mu.Unlock()
		if len(targets) > 0 {
			// No local delegate is eligible now; another replica's is.
			// The payload is forwarded unresolved: credentials never
			// cross the peer link.
			if err := d.startForward(ctx, t, req, targets); err != nil {
				return nil, err
			}
			held = false // given back when the task leaves memory
			return t, nil
		}
		if d.dir != nil && req.forwardedID == "" && !slices.Contains(t.selectors, PlatformTag) {
			keep := req // queued here: forwarded if a delegate shows up elsewhere
			t.fwdReq = &keep
		}
	}
	if !req.Async && d.needsResolve(req.Payload) {
		// Sync tasks live only in memory: resolve once, now.
		p, err := d.resolve(ctx, t.id, req.Payload)
		if err != nil {
			return nil, err
		}
		t.payload = p
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed { // checked before the store write: a refused task must not run later
		return nil, ErrShuttingDown
	}
	if req.Async {
		raw, err := d.sealPayload(t.id, req.Payload)
		if err != nil {
			return nil, err
		}
		t.requestID = req.Request.ID
		if d.cl != nil {
			// Its caller waits here: a generated value comes here.
			t.origin = d.cl.replica
			// A replica: stored unowned, pulled by whichever replica's
			// delegates have room (pull.go).
			// Its reservation is the awaited task's from now on, until
			// it ends or is pulled here (clusterwait.go).
			t.held, held = true, false
		}
		st := &store.Task{
			ID: t.id, Kind: t.kind, Selectors: t.selectors, Scope: t.scope, Payload: raw,
			State: store.StateQueued, MaxAttempts: t.maxAttempts,
			CreatedAt: now, UpdatedAt: now, Deadline: t.deadline,
			QueueDeadline: now.Add(d.cfg.QueueTimeout.D()), Request: req.Request,
			OrderKey: t.orderKey, Origin: t.origin,
		}
		d.await(t) // before the store has it: a pull here finds it
		err = d.store.CreateTask(ctx, st)
		var dup *store.DuplicateRequestError
		if errors.As(err, &dup) {
			d.unawait(t)
			return d.existing(ctx, dup.Task, req.Request)
		}
		if err != nil && !d.storedAnyway(ctx, st.ID, err) {
			d.unawait(t)
			return nil, fmt.Errorf("persist task: %w", err)
		}
		if d.cl != nil {
			// t may be pulled here already: only st is read.
			d.metrics.submitted.WithLabelValues(st.Kind).Inc()
			d.wakePull()
			return t, nil
		}
	}
	d.metrics.submitted.WithLabelValues(t.kind).Inc()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrShuttingDown
	}
	d.tasks[t.id] = t
	held = false // given back when the task leaves memory (forgetLocked)
	d.admitLocked(t, now)
	var sends []send
	if !t.waiting {
		sends = d.dispatchTaskLocked(t)
	}
	if t.fwdReq != nil && t.state == store.StateQueued {
		d.dir.waiting[t.id] = t
	}
	d.mu.Unlock()
	d.deliver(sends)
	return t, nil
}

// taskScope is the scope of a task: its connector's for a secret task
// (so that no caller can submit one under another scope), else given.
func taskScope(given store.Scope, p *delegatev1.TaskPayload) store.Scope {
	if ref := p.GetConnector(); ref != nil {
		return scopes.FromProto(ref.GetScope())
	}
	return given
}

// enqueueLocked puts t at the back of its queue.
func (d *Dispatcher) enqueueLocked(t *task, now time.Time) {
	q := d.queues[t.key]
	if q == nil {
		q = &queue{scope: t.scope, selectors: t.selectors}
		d.queues[t.key] = q
	}
	d.seq++
	t.seq = d.seq
	t.state = store.StateQueued
	t.enqueuedAt = now
	t.queueDL = now.Add(d.cfg.QueueTimeout.D())
	t.elem = q.l.PushBack(t)
	d.queued++
	d.metrics.queued.Set(float64(d.queued))
}

// dequeueLocked removes a queued t from its queue.
func (d *Dispatcher) dequeueLocked(t *task) {
	if t.elem == nil {
		return
	}
	q := d.queues[t.key]
	q.l.Remove(t.elem)
	t.elem = nil
	if q.l.Len() == 0 {
		delete(d.queues, t.key)
	}
	d.queued--
	d.metrics.queued.Set(float64(d.queued))
}

// send is a dispatch decided under the lock and delivered after it.
type send struct {
	t     *task
	to    *delegate
	lease store.Lease
	msg   *delegatev1.ManagerMessage
}

// dispatchTaskLocked gives a freshly queued t to the least loaded eligible
// delegate with credit, if there is one and t is at the head of its queue.
func (d *Dispatcher) dispatchTaskLocked(t *task) []send {
	if q := d.queues[t.key]; q == nil || q.l.Front().Value.(*task) != t {
		return nil // older tasks with this scope and these selectors wait for credit first
	}
	best := d.leastLoadedLocked(t.key, t.scope, t.selectors)
	if best == nil {
		return nil
	}
	return []send{d.leaseLocked(t, best)}
}

// dispatchForLocked spends dg's credit on the oldest queued tasks it matches.
func (d *Dispatcher) dispatchForLocked(dg *delegate) []send {
	var sends []send
	for dg.eligible() && d.queued > 0 {
		var pick *task
		for _, q := range d.queues {
			head := q.l.Front().Value.(*task)
			if (pick == nil || head.seq < pick.seq) && dg.matches(q.scope, q.selectors) {
				pick = head
			}
		}
		if pick == nil {
			break
		}
		sends = append(sends, d.leaseLocked(pick, dg))
	}
	return sends
}

// leaseLocked moves t from its queue to dg under a new lease.
func (d *Dispatcher) leaseLocked(t *task, dg *delegate) send {
	now := d.now()
	d.dequeueLocked(t)
	t.attempt++
	t.state = store.StateLeased
	t.leaseID = ids.Random()
	t.holder = dg.name
	t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
	t.updatedAt = now
	t.busy = t.async // the claim is persisted before the task is sent
	dg.credit--
	dg.running[t.id] = t
	d.touchLocked(dg)
	d.metrics.dispatchLatency.Observe(now.Sub(t.enqueuedAt).Seconds())
	d.notifyLocked(t)
	return send{
		t:     t,
		to:    dg,
		lease: store.Lease{ID: t.leaseID, Delegate: dg.name, Attempt: t.attempt},
		msg: &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Task{Task: &delegatev1.Task{
			Id: t.id, LeaseId: t.leaseID, Attempt: int32(t.attempt),
			Deadline: timestamp(t.deadline), Payload: t.payload,
		}}},
	}
}

// deliver sends decided dispatches: sync ones at once, async ones after
// their claim is durable, so a lease the agent acts on is never lost.
func (d *Dispatcher) deliver(sends []send) {
	for _, s := range sends {
		if !s.t.async {
			if s.to.out.Push(s.msg) != nil {
				d.undelivered(s)
			}
			continue
		}
		d.spawn(func() { d.claimAndSend(s) })
	}
}

// claimAndSend resolves s's payload and persists its lease, then sends it.
// A failed step is retried with backoff (storefail.go); after a failed
// Claim the stored row decides: the claim took effect (send), it did not
// (try again), or the task was finished or claimed elsewhere meanwhile
// (the lease is given back and the task leaves memory, waking its
// waiters). When the dispatcher closes first the task stays as stored
// for the next start.
func (d *Dispatcher) claimAndSend(s send) {
	ctx := context.Background()
	resolved := !d.needsResolve(s.t.payload)
	for n := 0; ; {
		if !resolved {
			// Credentials and OIDC tokens are resolved at each dispatch,
			// so stored tasks never hold them and retries get fresh ones.
			p, err := d.resolve(ctx, s.t.id, s.t.payload)
			switch {
			case err == nil:
				s.msg.GetTask().Payload, resolved = p, true
			case store.IsUnavailable(err):
				d.storeFailed("read connector", s.t.id, err)
				n++
				if !d.pause(n) {
					return
				}
				continue
			default:
				d.unlease(s)
				d.failErr(s.t, err)
				return
			}
		}
		err := d.store.Claim(ctx, s.t.id, s.lease)
		if err == nil {
			if n > 0 {
				d.storeRecovered()
			}
			break
		}
		if errors.Is(err, store.ErrClosed) {
			return
		}
		st, ok := d.readBack("claim", s.t, err, &n)
		switch {
		case !ok:
			return
		case st == nil:
			d.unlease(s)
			d.release(s.t, "it is no longer in the store")
			return
		case st.State.Final():
			d.unlease(s)
			d.finishStored(s.t, st)
			return
		case st.State == store.StateLeased && st.LeaseID == s.lease.ID:
			// The claim took effect although it reported an error.
		case st.State == store.StateLeased:
			d.unlease(s)
			d.release(s.t, "another manager claimed it")
			return
		case d.ownedElsewhere(st):
			// A replica's claim is fenced by owner: the task went back
			// to the cluster's queue, or to another replica.
			d.unlease(s)
			d.release(s.t, "another replica, or the cluster's queue, has it")
			return
		default: // still queued: the claim did not take effect
			d.storeFailed("claim", s.t.id, err)
			n++
			if !d.pause(n) {
				return
			}
			continue
		}
		break
	}
	d.mu.Lock()
	s.t.busy = false
	// The lease runs from the send, however long the claim took.
	s.t.leaseExpiry = d.now().Add(d.cfg.LeaseDuration.D())
	d.mu.Unlock()
	// A closed outbox means the delegate left in the meantime: the task
	// goes back to the queue at once.
	if s.to.out.Push(s.msg) != nil {
		d.undelivered(s)
	}
}

// unlease gives back a lease the delegate never saw: its credit returns
// and it may take other work. t stays busy for the caller to finish. A
// stream replaced or closed meanwhile gets nothing: a task leased to it
// would never be sent and would lose an attempt.
func (d *Dispatcher) unlease(s send) {
	d.mu.Lock()
	delete(s.to.running, s.t.id)
	if !d.liveLocked(s.to) {
		d.mu.Unlock()
		return
	}
	s.to.credit++
	d.touchLocked(s.to)
	sends := d.dispatchForLocked(s.to)
	d.mu.Unlock()
	d.deliver(sends)
}

// needsResolve reports whether p names a connector to resolve.
func (d *Dispatcher) needsResolve(p *delegatev1.TaskPayload) bool {
	return d.resolve != nil && p.GetConnector() != nil && p.GetSecret() != nil
}

// sealPayload marshals and, with a master key, encrypts a payload for the
// store, bound to the task id.
func (d *Dispatcher) sealPayload(id string, p *delegatev1.TaskPayload) ([]byte, error) {
	raw, err := proto.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("marshal payload: %w", err)
	}
	if d.sealer == nil {
		return raw, nil
	}
	return d.sealer.Seal(raw, []byte("task/"+id)), nil
}

// keptPayload is what the store keeps of task id's payload p once the
// task is final: p without its secret values (delegatev1.Redact), sealed.
// p itself is not changed. On error it returns nil, for no payload.
func (d *Dispatcher) keptPayload(id string, p *delegatev1.TaskPayload) ([]byte, error) {
	c := proto.Clone(p).(*delegatev1.TaskPayload)
	delegatev1.Redact(c)
	raw, err := d.sealPayload(id, c)
	if err != nil {
		return nil, err
	}
	return raw, nil
}

// scrubStored is the store.ScrubFunc of the migration of tasks an older
// manager finished with their whole payload: the payload without its
// secret values. A payload it cannot open (another master key, damage)
// is dropped: a final task needs none, and one that cannot be read
// cannot be scrubbed either.
func (d *Dispatcher) scrubStored(id string, raw []byte) ([]byte, error) {
	p, err := d.openPayload(id, raw)
	if err != nil {
		d.log.Warn().Err(err).Str("task_id", id).Msg("finished task has an unreadable payload; dropping it")
		return nil, nil
	}
	return d.keptPayload(id, p)
}

// openPayload reverses sealPayload.
func (d *Dispatcher) openPayload(id string, raw []byte) (*delegatev1.TaskPayload, error) {
	if d.sealer != nil {
		var err error
		if raw, err = d.sealer.Open(raw, []byte("task/"+id)); err != nil {
			return nil, err
		}
	}
	p := &delegatev1.TaskPayload{}
	return p, proto.Unmarshal(raw, p)
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
