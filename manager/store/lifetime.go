package store

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Lifetime is what the Store implementations share of opening and
// closing: the gate every call passes (so that Close waits for calls in
// flight and no call reaches a closed database) and the background loop
// that applies their retention (KeepFinished). The zero value is open,
// with no loop; StartPrune starts the loop. Each implementation keeps
// its own Prune, which knows its tables.
type Lifetime struct {
	// mu guards closed. Every call holds a read lock for its whole run
	// (Enter to Exit), so Close (which takes the write lock) waits for
	// calls in flight.
	mu     sync.RWMutex
	closed bool

	// cancel stops the prune loop; done is closed when it has returned.
	// Both are nil when no loop was started.
	cancel context.CancelFunc
	done   chan struct{}
}

// PruneFunc deletes the final tasks that finished before cutoff and
// returns how many it deleted; a cancelled ctx stops it part-way.
type PruneFunc func(ctx context.Context, cutoff time.Time) (int, error)

// StartPrune runs prune with a cutoff of keep ago at once and then every
// interval, until Close, logging its errors and what it deleted on log.
// keep <= 0 starts nothing (history is kept forever). It is called once,
// from the implementation's Open.
func (l *Lifetime) StartPrune(log zerolog.Logger, keep, interval time.Duration, prune PruneFunc) {
	if keep <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			n, err := prune(ctx, time.Now().Add(-keep))
			switch {
			case err != nil && ctx.Err() == nil:
				log.Error().Err(err).Msg("prune finished tasks")
			case n > 0:
				log.Info().Int("deleted", n).Dur("keep_finished", keep).Msg("pruned finished tasks")
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// Enter starts a call: ErrClosed after Close; otherwise the caller must
// call Exit when the call is finished.
func (l *Lifetime) Enter() error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Exit ends a call Enter started.
func (l *Lifetime) Exit() { l.mu.RUnlock() }

// Closed reports whether Close has been called.
func (l *Lifetime) Closed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

// Close stops the prune loop first (so that Close does not wait for a
// long prune to finish), waits for calls in flight and refuses new ones,
// waits for the loop to return, and then calls release, which closes
// the database itself. A second Close returns ErrClosed and does not call
// release.
func (l *Lifetime) Close(release func() error) error {
	if l.cancel != nil {
		l.cancel()
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()

	if l.done != nil {
		<-l.done
	}
	return release()
}
