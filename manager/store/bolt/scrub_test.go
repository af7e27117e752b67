package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/smdelegate/smdelegate/manager/store"
)

// legacy rewrites task id's record in db as an older smd wrote it: codec
// version 3 (request ids, a Complete that kept the payload; no order
// key), 2 (no request) or 1 (no scope either); the task must have none
// of them.
func legacy(t *testing.T, db *DB, id string, version byte) {
	t.Helper()
	err := db.bdb.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("no task %s", id)
		}
		old := append([]byte{version}, v[1:]...)
		switch version {
		case codecVersionWholePayload, codecVersionNoOrder:
			old = old[:len(old)-1] // the empty order key: one zero byte
		case codecVersionNoRequest:
			old = old[:len(old)-4] // owner, id, hash and order key: one zero byte each
		case codecVersionNoScope:
			old = old[:len(old)-7]
		}
		return b.Put([]byte(id), old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestItem7ScrubLegacyTasks: the final tasks an older smd stored, whose
// payload Complete kept whole, are passed to scrub once each, in chunks,
// and hold what it returned; tasks this store completed, and unfinished
// ones, are never passed; a legacy task still unfinished is completed
// the new way and needs no scrub.
func TestItem7ScrubLegacyTasks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetScrubChunk(2)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mk := func(id string, st store.State, version byte) {
		task := &store.Task{ID: id, Kind: "secret.create", Payload: []byte("whole payload of " + id), MaxAttempts: 1, CreatedAt: created}
		if err := db.CreateTask(ctx, task); err != nil {
			t.Fatal(err)
		}
		if st.Final() {
			if err := db.Complete(ctx, id, "", store.Final{State: st, Code: "OK", Payload: []byte("whole payload of " + id)}); err != nil {
				t.Fatal(err)
			}
		}
		if version != 0 {
			legacy(t, db, id, version)
		}
	}
	mk("v1-done", store.StateSucceeded, codecVersionNoScope)
	mk("v2-done", store.StateFailed, codecVersionNoRequest)
	mk("v3-done", store.StateSucceeded, codecVersionWholePayload)
	mk("v3-done-2", store.StateFailed, codecVersionWholePayload)
	mk("v3-done-3", store.StateSucceeded, codecVersionWholePayload)
	mk("v3-queued", store.StateQueued, codecVersionWholePayload)
	mk("v4-done", store.StateSucceeded, 0)
	mk("v4-queued", store.StateQueued, 0)

	var passed []string
	n, err := db.ScrubFinished(ctx, func(id string, p []byte) ([]byte, error) {
		passed = append(passed, id)
		if string(p) != "whole payload of "+id {
			t.Errorf("scrub(%s) got payload %q", id, p)
		}
		return []byte("scrubbed " + id), nil
	})
	want := []string{"v1-done", "v2-done", "v3-done", "v3-done-2", "v3-done-3"}
	if err != nil || n != len(want) || !slices.Equal(passed, want) {
		t.Fatalf("ScrubFinished() = %d, %v, passing %q; want %d, nil, passing %q", n, err, passed, len(want), want)
	}
	for _, id := range []string{"v1-done", "v2-done", "v3-done", "v3-done-2", "v3-done-3", "v3-queued", "v4-done", "v4-queued"} {
		got, err := db.GetTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		wantPayload := "whole payload of " + id
		if slices.Contains(want, id) {
			wantPayload = "scrubbed " + id
		}
		if string(got.Payload) != wantPayload {
			t.Errorf("GetTask(%s).Payload = %q, want %q", id, got.Payload, wantPayload)
		}
	}
	// Once scrubbed, never again; the legacy queued task completes the
	// new way.
	if err := db.Complete(ctx, "v3-queued", "", store.Final{State: store.StateFailed, Code: "TIMEOUT"}); err != nil {
		t.Fatal(err)
	}
	passed = nil
	if n, err := db.ScrubFinished(ctx, func(id string, p []byte) ([]byte, error) { passed = append(passed, id); return p, nil }); n != 0 || err != nil || passed != nil {
		t.Errorf("ScrubFinished() again = %d, %v, passing %q; want 0, nil, none", n, err, passed)
	}

	// An error from scrub stops it, with nothing written for that chunk.
	mk("v3-late", store.StateSucceeded, codecVersionWholePayload)
	boom := fmt.Errorf("boom")
	if _, err := db.ScrubFinished(ctx, func(string, []byte) ([]byte, error) { return nil, boom }); err == nil {
		t.Errorf("ScrubFinished(failing scrub) = nil error")
	}
	if got, _ := db.GetTask(ctx, "v3-late"); string(got.Payload) != "whole payload of v3-late" {
		t.Errorf("after a failed scrub, payload = %q, want it unchanged", got.Payload)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := db.ScrubFinished(cctx, func(_ string, p []byte) ([]byte, error) { return p, nil }); err == nil {
		t.Errorf("ScrubFinished(cancelled) = nil error")
	}
}
