package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Retrying through a store outage: the beat loop's wait after a failed
// round doubles from BeatInterval up to DeadAfter/3 (so that a recovered
// store hears from this replica well before the others could take it for
// dead), the listener's from listenBackoffMin up to listenBackoffMax; both
// with jitter. A failure is logged when it starts, then at most once per
// outageLogEvery while it lasts, and once when it ends.
//
// Not retried: store.ErrClosed (the store is closed: nothing will work
// again; the manager closes it only after Run returned).
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	outageLogEvery   = time.Minute
)

// Join records this replica alive and reads the others, once, so that
// the view (Alive, Peers) is filled before the replica serves. Its error
// is the store's.
func (m *Membership) Join(ctx context.Context) error {
	if err := m.beat(ctx); err != nil {
		return err
	}
	_, err := m.read(ctx)
	return err
}

// Run beats every BeatInterval, finds dead replicas and drops them, and
// delivers the store's notifications to the subscribers, until ctx is
// done. Store failures are retried (see above). It returns nil once ctx
// is done and both of its loops have returned, or store.ErrClosed.
func (m *Membership) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.listen(ctx)
	}()
	err := m.beatLoop(ctx)
	cancel()
	wg.Wait()
	return err
}

// beatLoop is Run's heartbeat.
func (m *Membership) beatLoop(ctx context.Context) error {
	var (
		out          = outage{log: m.log, what: "cluster heartbeat"}
		healthySince time.Time // zero while failing
		maxWait      = max(m.cfg.BeatInterval, m.cfg.DeadAfter/3)
		wait         = m.cfg.BeatInterval
	)
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := m.round(ctx, &healthySince)
		switch {
		case err == nil:
			out.ok()
			wait = m.cfg.BeatInterval
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, store.ErrClosed):
			return err
		default:
			healthySince = time.Time{}
			out.fail(err)
			wait = jitter(min(2*wait, maxWait))
		}
		t.Reset(wait)
	}
}

// round is one heartbeat: beat, read the rows, drop the dead.
func (m *Membership) round(ctx context.Context, healthySince *time.Time) error {
	if err := m.beat(ctx); err != nil {
		return err
	}
	now := time.Now()
	if healthySince.IsZero() {
		*healthySince = now
	}
	stale, err := m.read(ctx)
	if err != nil {
		return err
	}
	// After an outage every row is stale: judge only once this replica
	// has beaten for DeadAfter itself, giving the others as long.
	if now.Sub(*healthySince) < m.cfg.DeadAfter {
		return nil
	}
	m.mu.Lock()
	m.dead = ids(stale)
	m.mu.Unlock()
	for _, r := range stale {
		if err := m.st.DropReplica(ctx, r.ID); err != nil {
			return err
		}
		m.mu.Lock()
		first := !m.dropped[r.ID]
		m.dropped[r.ID] = true
		m.mu.Unlock()
		if first {
			m.log.Warn().Str("replica", r.ID).Str("host", r.Host).Int("pid", r.PID).Dur("last_seen_ago", r.Age).
				Msg("replica found dead: dropped its delegates and gave its queued tasks back to the queue")
		}
	}
	return nil
}

// beat records this replica alive, unless it has left.
func (m *Membership) beat(ctx context.Context) error {
	m.beatMu.Lock()
	defer m.beatMu.Unlock()
	if m.left {
		return nil
	}
	return m.st.Beat(ctx, m.self)
}

// read reads the replica rows into the view and returns the stale ones
// (other than this replica). If this replica's own row shows another
// start than the first read did, the others dropped it (its heartbeats
// failed for DeadAfter) and the beat made a new row: its delegates'
// records and queued tasks may be gone, so the subscribers resync.
func (m *Membership) read(ctx context.Context) ([]store.Replica, error) {
	reps, err := m.st.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	alive := map[string]store.Replica{m.self.ID: m.self}
	var stale []store.Replica
	var selfStart time.Time
	for _, r := range reps {
		switch {
		case r.ID == m.self.ID:
			selfStart = r.StartedAt
			alive[r.ID] = r
		case r.Cluster != m.self.Cluster:
			// Not ours (the lock keeps other clusters off): ignored.
		case r.Age > m.cfg.DeadAfter:
			stale = append(stale, r)
		default:
			alive[r.ID] = r
		}
	}
	m.mu.Lock()
	m.alive = alive
	dropped := !m.started.IsZero() && !selfStart.IsZero() && !selfStart.Equal(m.started)
	if !selfStart.IsZero() {
		m.started = selfStart
	}
	m.dead = slices.DeleteFunc(m.dead, func(id string) bool {
		return !slices.ContainsFunc(stale, func(r store.Replica) bool { return r.ID == id })
	})
	m.mu.Unlock()
	m.gauge.Set(float64(len(alive)))
	if dropped {
		m.log.Warn().Str("replica", m.self.ID).
			Msg("the other replicas took this one for dead (its heartbeats failed for cluster.dead_after) and dropped it; joined again, resyncing")
		m.publish(store.Event{Kind: store.EventResync})
	}
	return stale, nil
}

// listen is Run's listener: one store.Cluster.Listen at a time, called
// again with backoff when it fails (it retries a lost connection itself;
// it fails when it cannot connect at first). Before each new call the
// subscribers get EventResync, since notifications were missed meanwhile.
func (m *Membership) listen(ctx context.Context) {
	out := outage{log: m.log, what: "cluster notifications"}
	backoff := listenBackoffMin
	for {
		err := m.st.Listen(ctx, func(e store.Event) {
			out.ok()
			m.publish(e)
		})
		if ctx.Err() != nil || errors.Is(err, store.ErrClosed) {
			return
		}
		if err == nil {
			err = errors.New("listener stopped")
		}
		out.fail(err)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
		m.publish(store.Event{Kind: store.EventResync})
	}
}

// outage logs a failing loop: once when it starts failing, then at most
// once per outageLogEvery, and once when it works again. Owned by one
// goroutine.
type outage struct {
	log     zerolog.Logger
	what    string
	since   time.Time
	lastLog time.Time
}

// fail records a failed attempt.
func (o *outage) fail(err error) {
	now := time.Now()
	switch {
	case o.since.IsZero():
		o.since, o.lastLog = now, now
		o.log.Warn().Err(err).Msg(o.what + " failing; retrying")
	case now.Sub(o.lastLog) >= outageLogEvery:
		o.lastLog = now
		o.log.Warn().Err(err).Dur("for", now.Sub(o.since).Round(time.Second)).Msg(o.what + " still failing; retrying")
	}
}

// ok records a success.
func (o *outage) ok() {
	if o.since.IsZero() {
		return
	}
	o.log.Info().Dur("after", time.Since(o.since).Round(time.Millisecond)).Msg(o.what + " working again")
	o.since = time.Time{}
}

// ids are the IDs of rs.
func ids(rs []store.Replica) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// sortReplicas orders rs by start, then ID.
func sortReplicas(rs []store.Replica) {
	slices.SortFunc(rs, func(a, b store.Replica) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// jitter is d give or take a fifth.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(2*d/5+1)
}
