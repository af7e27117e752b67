package bolt_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
)

// BenchmarkCreateClaimComplete runs a task's three durable mutations
// (CreateTask, Claim, Complete) from 64 and 256 goroutines, the manager's
// hot path under load, and reports durable mutations per second. Every
// mutation is fsynced before it returns; the throughput comes from the
// group commit.
func BenchmarkCreateClaimComplete(b *testing.B) {
	for _, callers := range []int{64, 256} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			db := MustOpen(b, b.TempDir(), bolt.Options{})
			defer db.Close()
			var seq atomic.Int64
			// RunParallel starts GOMAXPROCS × parallelism goroutines.
			b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := createClaimComplete(b, db, seq.Add(1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(3*b.N)/b.Elapsed().Seconds(), "mutations/s")
		})
	}
}

// BenchmarkCreateClaimCompleteSerial is the same from one goroutine: the
// latency of a lone mutation: one commit and its fsync.
func BenchmarkCreateClaimCompleteSerial(b *testing.B) {
	db := MustOpen(b, b.TempDir(), bolt.Options{})
	defer db.Close()
	for i := range b.N {
		if err := createClaimComplete(b, db, int64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(3*b.N)/b.Elapsed().Seconds(), "mutations/s")
}

var payload = make([]byte, 512)

func createClaimComplete(b *testing.B, db *bolt.DB, n int64) error {
	ctx := b.Context()
	id := fmt.Sprintf("task-%09d", n)
	task := &store.Task{ID: id, Kind: "secret.create", Selectors: []string{"prod"}, Payload: payload, MaxAttempts: 3}
	if err := db.CreateTask(ctx, task); err != nil {
		return err
	}
	l := store.Lease{ID: "lease-" + id, Delegate: "delegate", Attempt: 1}
	if err := db.Claim(ctx, id, l); err != nil {
		return err
	}
	return db.Complete(ctx, id, l.ID, store.Final{State: store.StateSucceeded, Code: "OK", Outcome: payload[:64]})
}
