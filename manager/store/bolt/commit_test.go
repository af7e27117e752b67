package bolt

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

// TestCommitterIsolatesFailures: many concurrent calls share
// transactions; a call that fails or panics gets its own error and
// writes nothing, and every other call is committed.
func TestCommitterIsolatesFailures(t *testing.T) {
	t.Parallel()
	bdb, err := bbolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bdb.Close() })
	bucket := []byte("b")
	if err := bdb.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }); err != nil {
		t.Fatal(err)
	}
	c := &committer{db: bdb, maxBatch: 16}
	errBad := errors.New("bad call")
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.do(func(tx *bbolt.Tx) error {
				if err := tx.Bucket(bucket).Put([]byte(fmt.Sprint(i)), []byte("v")); err != nil {
					return err
				}
				switch i % 50 {
				case 7:
					return errBad
				case 13:
					panic("boom")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	err = bdb.View(func(tx *bbolt.Tx) error {
		for i := range n {
			got := tx.Bucket(bucket).Get([]byte(fmt.Sprint(i)))
			switch i % 50 {
			case 7:
				if !errors.Is(errs[i], errBad) || got != nil {
					t.Errorf("call %d (fails): error %v, stored %q; want errBad and nothing stored", i, errs[i], got)
				}
			case 13:
				if errs[i] == nil || got != nil {
					t.Errorf("call %d (panics): error %v, stored %q; want an error and nothing stored", i, errs[i], got)
				}
			default:
				if errs[i] != nil || string(got) != "v" {
					t.Errorf("call %d: error %v, stored %q; want nil and v", i, errs[i], got)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
