package dispatch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
)

// Limits on what operators submit (LimitsConfig, README "Limits"). Every
// refusal is decided here, by the limiter, and counted in
// smd_limit_refusals_total{limit, token}:
//
//   - submit_rate: a token bucket per operator token over the calls that
//     make tasks, checked by the API's interceptor (api.RateLimit)
//     before the handler runs. Refused: ResourceExhausted with RetryInfo
//     (when the bucket has a token again) and QuotaFailure.
//   - scope_unfinished_tasks, scope_payload_bytes: the queued and running
//     tasks of one scope (a task's own scope, exactly: a project's tasks
//     do not count against its org), and the bytes of their payloads,
//     reserved by Dispatcher.Submit before the task is stored and given
//     back when it leaves the dispatcher's memory (final). Refused:
//     ResourceExhausted with QuotaFailure and no RetryInfo: retrying at
//     once does not help, the scope's tasks must finish first.
//   - ping_max_sleep: a ping's sleep, InvalidArgument naming "sleep".
//   - ListTasks pages: at most maxListPage tasks a call (not a refusal:
//     the rest comes with next_page_token).
//
// What a token can hold unfinished is bounded even across many scopes:
// every task ends by dispatch.task_deadline, so at most about
// submit_rate × task_deadline + submit_burst.

// ListTasks page sizes.
const (
	defaultListPage = 100
	maxListPage     = 1000
)

// The limits, as refusals and metrics name them (the key under limits:).
const (
	limitSubmitRate      = "submit_rate"
	limitUnfinishedTasks = "scope_unfinished_tasks"
	limitPayloadBytes    = "scope_payload_bytes"
)

// LimitError is a refusal by a limit (the API answers ResourceExhausted,
// with RetryInfo when waiting RetryAfter cures it).
type LimitError struct {
	// Limit is the key under limits: that refused ("submit_rate", ...).
	Limit string
	// Subject is what the limit applies to: "operator token NAME" or
	// "scope S".
	Subject string
	Msg     string
	// RetryAfter, when positive, is how long to wait before the same
	// call is accepted.
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return e.Msg }

// usage is what a scope's unfinished tasks hold.
type usage struct {
	tasks int
	bytes int
}

// limiter enforces LimitsConfig. A nil *Limiter limits nothing (tests
// that build a Dispatcher alone).
type Limiter struct {
	cfg     LimitsConfig
	refused *prometheus.CounterVec

	mu     sync.Mutex               // guards tokens and scopes
	tokens map[string]*rate.Limiter // by operator token (tokenKey)
	scopes map[store.Scope]*usage   // unfinished tasks by their scope
}

func NewLimiter(cfg LimitsConfig, m *Metrics) *Limiter {
	return &Limiter{cfg: cfg, refused: m.limitRefusals, tokens: map[string]*rate.Limiter{}, scopes: map[store.Scope]*usage{}}
}

// tokenKey names an operator token's bucket: its scope and name, like
// request ids (requestOwner). Two entries with the same name and scope
// (an old and a new token during a rotation) share one bucket.
func tokenKey(id identity.Identity) string { return id.Scope.String() + ":" + id.Name }

// Allow takes one token from the bucket of the operator token in ctx
// (submit_rate), or refuses with a *LimitError saying when there is one.
// The API's interceptor calls it for the calls that make tasks.
func (l *Limiter) Allow(ctx context.Context) error {
	id := identity.From(ctx)
	key := tokenKey(id)
	l.mu.Lock()
	b := l.tokens[key]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(l.cfg.SubmitRate), l.cfg.SubmitBurst)
		l.tokens[key] = b
	}
	l.mu.Unlock()
	r := b.Reserve()
	wait := r.Delay()
	if wait == 0 {
		return nil
	}
	r.Cancel() // a refused call takes nothing from the bucket
	l.refused.WithLabelValues(limitSubmitRate, id.Name).Inc()
	return &LimitError{
		Limit: limitSubmitRate, Subject: "operator token " + id.Name, RetryAfter: wait,
		Msg: fmt.Sprintf("too many submissions: operator token %q may submit %d tasks a second, %d at once "+
			"(limits.submit_rate, limits.submit_burst); retry in %s", id.Name, l.cfg.SubmitRate, l.cfg.SubmitBurst, wait.Round(time.Millisecond)),
	}
}

// reserve counts a new task of scope with a payload of size bytes
// against the scope's limits, or refuses it and counts nothing. The
// caller gives it back with release once the task is gone.
func (l *Limiter) reserve(ctx context.Context, scope store.Scope, size int) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.scopes[scope]
	if u == nil {
		u = &usage{}
	}
	var err *LimitError
	subject := "no scope"
	if !scope.IsZero() {
		subject = "scope " + scope.String()
	}
	switch {
	case u.tasks+1 > l.cfg.ScopeUnfinishedTasks:
		err = &LimitError{Limit: limitUnfinishedTasks, Subject: subject, Msg: fmt.Sprintf(
			"%d tasks %s are unfinished, as many as limits.scope_unfinished_tasks allows: wait for some to finish",
			u.tasks, tasksOf(scope))}
	case u.bytes+size > l.cfg.ScopePayloadBytes:
		err = &LimitError{Limit: limitPayloadBytes, Subject: subject, Msg: fmt.Sprintf(
			"the unfinished tasks %s hold %d bytes of payload and this one has %d, more than limits.scope_payload_bytes (%d) allows: wait for some to finish",
			tasksOf(scope), u.bytes, size, l.cfg.ScopePayloadBytes)}
	}
	if err != nil {
		l.refused.WithLabelValues(err.Limit, identity.From(ctx).Name).Inc()
		return err
	}
	u.tasks++
	u.bytes += size
	l.scopes[scope] = u
	return nil
}

// tasksOf names a scope's tasks in messages: "of scope S".
func tasksOf(scope store.Scope) string {
	if scope.IsZero() {
		return "without a scope"
	}
	return "of scope " + scope.String()
}

// add counts a task that exists already (recovered at start) without
// refusing it: what is stored runs, and new tasks wait until the scope is
// below its limits again.
func (l *Limiter) add(scope store.Scope, size int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.scopes[scope]
	if u == nil {
		u = &usage{}
		l.scopes[scope] = u
	}
	u.tasks++
	u.bytes += size
}

// release gives back what reserve or add counted.
func (l *Limiter) release(scope store.Scope, size int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.scopes[scope]
	if u == nil {
		return
	}
	u.tasks--
	u.bytes -= size
	if u.tasks <= 0 {
		delete(l.scopes, scope)
	}
}

// pingSleep checks a ping's sleep against ping_max_sleep.
func (l *Limiter) PingSleep(d time.Duration) error {
	if d < 0 || d > l.cfg.PingMaxSleep.D() {
		return config.Errf("sleep", "must be between 0 and %s (limits.ping_max_sleep), not %s", l.cfg.PingMaxSleep, d)
	}
	return nil
}

// listPage is the page size of a ListTasks limit: 0 is the default page,
// more than maxListPage is maxListPage.
func ListPage(limit int32) (int, error) {
	switch {
	case limit < 0:
		return 0, config.Errf("limit", "must not be negative")
	case limit == 0:
		return defaultListPage, nil
	}
	return min(int(limit), maxListPage), nil
}
