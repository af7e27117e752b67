package bolt

import (
	"fmt"
	"sync"

	"go.etcd.io/bbolt"
)

// DefaultMaxBatchSize caps the mutations in one transaction when
// Options.MaxBatchSize is zero.
const DefaultMaxBatchSize = 1000

// committer is the store's group commit. Mutations wait in a queue; one
// goroutine at a time runs every waiting mutation in one write transaction
// with one fsync, then takes whatever queued meanwhile. A lone mutation
// commits at once, and under load a batch is as large as what arrives
// during one commit.
//
// bbolt's own DB.Batch closes a batch when its timer fires even while an
// earlier batch still holds the writer lock: under load, dozens of small
// batches then queue for the writer, one fsync each (seen in the bench:
// 50 batches waiting, 400-1,500 async tasks/s with 64-256 submitters).
type committer struct {
	db       *bbolt.DB
	maxBatch int

	mu      sync.Mutex // guards pending and running
	pending []*commitCall
	running bool // a goroutine is committing; it takes pending when done
}

type commitCall struct {
	fn   func(*bbolt.Tx) error
	done chan error
}

// do runs fn in a write transaction shared with other callers and returns
// once it is durable. fn may run more than once (see commit) and must
// write the same each time. An error from fn rolls back the shared
// transaction; fn then runs again alone and its error is returned.
func (c *committer) do(fn func(*bbolt.Tx) error) error {
	call := &commitCall{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, call)
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	return <-call.done
}

// run commits batches until the queue is empty.
func (c *committer) run() {
	for {
		c.mu.Lock()
		batch := c.pending
		if len(batch) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		if len(batch) > c.maxBatch {
			batch = batch[:c.maxBatch:c.maxBatch]
			c.pending = append([]*commitCall(nil), c.pending[c.maxBatch:]...)
		} else {
			c.pending = nil
		}
		c.mu.Unlock()
		c.commit(batch)
	}
}

// commit runs calls in one transaction. When one of them fails, the
// transaction is rolled back, that call runs alone (its error goes to its
// caller), and the others are committed together again.
func (c *committer) commit(calls []*commitCall) {
	for len(calls) > 0 {
		failed := -1
		err := c.db.Update(func(tx *bbolt.Tx) error {
			for i, call := range calls {
				if err := safely(call.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, call := range calls {
				call.done <- err
			}
			return
		}
		alone := calls[failed]
		calls = append(calls[:failed:failed], calls[failed+1:]...)
		alone.done <- c.db.Update(func(tx *bbolt.Tx) error { return safely(alone.fn, tx) })
	}
}

// safely runs fn, turning a panic into an error so that one bad call
// cannot take the committer (and every waiting caller) down.
func safely(fn func(*bbolt.Tx) error, tx *bbolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("bolt: panic in a transaction: %v", p)
		}
	}()
	return fn(tx)
}
