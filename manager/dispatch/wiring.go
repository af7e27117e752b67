package dispatch

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/seal"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// What the manager's Server calls to wire and run the dispatcher, in the
// order it calls it.

// Resolver fills a secret task's connector settings (credentials, OIDC
// token) from its connector reference, each time the task is sent.
type Resolver func(ctx context.Context, taskID string, p *delegatev1.TaskPayload) (*delegatev1.TaskPayload, error)

// SetSealer sets what encrypts async payloads at rest.
func (d *Dispatcher) SetSealer(s *seal.Sealer) { d.sealer = s }

// SetLimiter sets what counts the unfinished tasks of each scope.
func (d *Dispatcher) SetLimiter(l *Limiter) { d.limits = l }

// SetResolver sets the resolution of secret tasks' connectors (nil: payloads
// are sent as they are).
func (d *Dispatcher) SetResolver(r Resolver) { d.resolve = r }

// Logger is the dispatcher's logger (component=dispatcher).
func (d *Dispatcher) Logger() zerolog.Logger { return d.log }

// LoadTags reads the operator tags from the store (optags.go).
func (d *Dispatcher) LoadTags(ctx context.Context) error { return d.loadTags(ctx) }

// ScrubStored rewrites a stored finished task's outcome without secret
// values (store.ScrubFinished).
func (d *Dispatcher) ScrubStored(id string, raw []byte) ([]byte, error) {
	return d.scrubStored(id, raw)
}

// Recover loads the unfinished tasks from the store; it returns how many.
func (d *Dispatcher) Recover(ctx context.Context) (int, error) { return d.recover(ctx) }

// Sweep runs the timers (leases, queue timeouts, deadlines, silent
// delegates) every every until ctx is done.
func (d *Dispatcher) Sweep(ctx context.Context, every time.Duration) { d.sweep(ctx, every) }

// StartPlatform connects the in-process delegate of platform tasks, run by
// r with capacity slots, until ctx is done; wait joins its goroutines
// after that (platform.go).
func (d *Dispatcher) StartPlatform(ctx context.Context, r TaskRunner, capacity int) (wait func()) {
	return d.startPlatform(ctx, r, capacity)
}

// Close stops dispatching: Stopping is closed, waiting callers released.
func (d *Dispatcher) Close() { d.close() }

// Join waits for the dispatcher's own goroutines (store writes and their
// retries) after Close.
func (d *Dispatcher) Join() { d.join() }

// Registry is the Prometheus registry the collectors are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// StaleResults is smd_stale_results_total now.
func (m *Metrics) StaleResults() int { return int(testutilValue(m.staleResults)) }
