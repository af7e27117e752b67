package bolt

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

func codecTask() *store.Task {
	return &store.Task{
		ID:            "task-1",
		Kind:          "secret.create",
		Selectors:     []string{"eu", "prod"},
		Payload:       []byte{0, 1, 2, 0xff},
		State:         store.StateLeased,
		Attempt:       2,
		MaxAttempts:   3,
		LeaseID:       "lease",
		Delegate:      "delegate",
		Code:          "OK",
		Outcome:       []byte("outcome"),
		CreatedAt:     time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
		UpdatedAt:     time.Date(1960, 1, 2, 3, 4, 5, 1, time.UTC), // before the epoch
		Deadline:      time.Date(3000, 1, 1, 0, 0, 0, 999999999, time.UTC),
		QueueDeadline: time.Time{},
		Scope:         store.Scope{Account: "acme", Org: "payments", Project: "checkout"},
		Request:       store.Request{Owner: "acme:ci", ID: "deploy-42", Hash: []byte{0, 0xfe, 7}},
		OrderKey:      "eu-west-1 team/db",
	}
}

func TestCodecRoundTrip(t *testing.T) {
	tests := map[string]*store.Task{
		"all fields": codecTask(),
		"minimal":    {ID: "x", State: store.StateQueued},
	}
	for _, st := range []store.State{store.StateQueued, store.StateSucceeded, store.StateFailed} {
		task := codecTask()
		task.State = st
		tests[string(st)] = task
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			v, err := encodeTask(nil, want)
			if err != nil {
				t.Fatalf("encodeTask() = %v", err)
			}
			if n := encodedSize(want); len(v) > n {
				t.Errorf("len(encodeTask()) = %d, more than encodedSize() = %d", len(v), n)
			}
			if st, err := stateOf(v); err != nil || st != want.State {
				t.Errorf("stateOf() = %q, %v, want %q", st, err, want.State)
			}
			got, err := decodeTask(v)
			if err != nil {
				t.Fatalf("decodeTask() = %v", err)
			}
			// Exact equality: bolt keeps nanoseconds, and the zero time
			// decodes as time.Time{}.
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decodeTask(encodeTask()) mismatch (-want +got):\n%s", diff)
			}
			if !got.QueueDeadline.IsZero() && want.QueueDeadline.IsZero() {
				t.Errorf("zero QueueDeadline decoded as %v", got.QueueDeadline)
			}
		})
	}
}

// TestCodecDecodesVersion1 reads a record of the layout before scopes
// (version 1: version 2 without the three scope strings), as a store file
// written by an older manager holds: it decodes with no scope, and is
// written back as the current version.
func TestCodecDecodesVersion1(t *testing.T) {
	want := codecTask()
	want.Scope = store.Scope{}
	want.Request = store.Request{}
	want.OrderKey = ""
	v3, err := encodeTask(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	// Three empty scope strings, an empty request and order key: one
	// zero byte each.
	v2 := append([]byte{codecVersionNoRequest}, v3[1:len(v3)-4]...)
	v1 := append([]byte{codecVersionNoScope}, v3[1:len(v3)-7]...)
	got, err := decodeTask(v1)
	if err != nil {
		t.Fatalf("decodeTask(version 1) = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decodeTask(version 1) mismatch (-want +got):\n%s", diff)
	}
	again, err := encodeTask(nil, got)
	if err != nil || again[0] != codecVersion {
		t.Errorf("encodeTask(a version 1 task) = version %d, %v, want version %d", again[0], err, codecVersion)
	}
	// A version 1 record that carries scope strings has trailing bytes.
	if _, err := decodeTask(append([]byte{codecVersionNoScope}, v2[1:]...)); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeTask(version 1 with a scope) = %v, want %v", err, errCorrupt)
	}
}

// TestCodecDecodesVersion2 reads a record of the layout before request
// ids (version 2: version 3 without the request): it decodes with its
// scope and no request, and is written back as version 3.
func TestCodecDecodesVersion2(t *testing.T) {
	want := codecTask()
	want.Request = store.Request{}
	want.OrderKey = ""
	v3, err := encodeTask(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	v2 := append([]byte{codecVersionNoRequest}, v3[1:len(v3)-4]...) // owner, id, hash, order key: one zero byte each
	got, err := decodeTask(v2)
	if err != nil {
		t.Fatalf("decodeTask(version 2) = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decodeTask(version 2) mismatch (-want +got):\n%s", diff)
	}
	if again, err := encodeTask(nil, got); err != nil || again[0] != codecVersion {
		t.Errorf("encodeTask(a version 2 task) = version %d, %v, want version %d", again[0], err, codecVersion)
	}
	// A version 2 record that carries a request has trailing bytes.
	if _, err := decodeTask(append([]byte{codecVersionNoRequest}, v3[1:]...)); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeTask(version 2 with a request) = %v, want %v", err, errCorrupt)
	}
}

// TestIssue10CodecDecodesVersion4 reads a record of the layout before
// order keys (version 4: version 5 without the order key): it decodes
// with no order key and is written back as version 5.
func TestIssue10CodecDecodesVersion4(t *testing.T) {
	want := codecTask()
	want.OrderKey = ""
	v5, err := encodeTask(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	v4 := append([]byte{codecVersionNoOrder}, v5[1:len(v5)-1]...)
	got, err := decodeTask(v4)
	if err != nil {
		t.Fatalf("decodeTask(version 4) = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decodeTask(version 4) mismatch (-want +got):\n%s", diff)
	}
	if !payloadScrubbed(v4) {
		t.Error("payloadScrubbed(version 4) = false, want true (version 4 Complete replaced the payload)")
	}
	// A version 4 record that carries an order key has trailing bytes.
	withKey, err := encodeTask(nil, codecTask())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeTask(append([]byte{codecVersionNoOrder}, withKey[1:]...)); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeTask(version 4 with an order key) = %v, want %v", err, errCorrupt)
	}
}

func TestCodecDecodeCopies(t *testing.T) {
	v, err := encodeTask(nil, codecTask())
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeTask(v)
	if err != nil {
		t.Fatal(err)
	}
	for i := range v {
		v[i] = 0xAA // as bbolt may reuse the memory after the transaction
	}
	if diff := cmp.Diff(codecTask(), got); diff != "" {
		t.Errorf("decoded task changed with its source bytes (-want +got):\n%s", diff)
	}
}

func TestCodecUnknownState(t *testing.T) {
	task := codecTask()
	task.State = "bogus"
	if _, err := encodeTask(nil, task); err == nil {
		t.Error("encodeTask(state bogus) = nil error, want an error")
	}
}

func TestCodecCorrupt(t *testing.T) {
	v, err := encodeTask(nil, codecTask())
	if err != nil {
		t.Fatal(err)
	}
	// Every truncation fails cleanly.
	for n := range len(v) {
		if _, err := decodeTask(v[:n]); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeTask(first %d of %d bytes) = %v, want %v", n, len(v), err, errCorrupt)
		}
	}
	tests := map[string][]byte{
		"unknown version": append([]byte{codecVersion + 1}, v[1:]...),
		"version zero":    append([]byte{0}, v[1:]...),
		"unknown state":   append([]byte{codecVersion, 9}, v[2:]...),
		"trailing bytes":  append(bytes.Clone(v), 0),
		"huge selector count": func() []byte {
			b := []byte{codecVersion, 1, 1, 'x', 0} // id "x", kind ""
			return append(b, 0xff, 0xff, 0xff, 0xff, 0x0f)
		}(),
	}
	for name, b := range tests {
		if _, err := decodeTask(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeTask(%s) = %v, want %v", name, err, errCorrupt)
		}
	}
}

func FuzzDecodeTask(f *testing.F) {
	v, err := encodeTask(nil, codecTask())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v)
	f.Add([]byte{codecVersion, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		task, err := decodeTask(b) // must not panic
		if err != nil {
			return
		}
		if _, err := encodeTask(nil, task); err != nil {
			t.Errorf("encodeTask(decodeTask()) = %v", err)
		}
	})
}

func TestCreationKeyOrder(t *testing.T) {
	times := []time.Time{
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Unix(0, 0),
		time.Unix(0, 1),
		time.Unix(1, 0),
		time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 6, time.FixedZone("x", -3600)), // later instant
		time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for i := 1; i < len(times); i++ {
		a, b := creationKey(times[i-1], "z"), creationKey(times[i], "a")
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("creationKey(%v) >= creationKey(%v), want time order", times[i-1], times[i])
		}
	}
	if a, b := creationKey(times[3], "a"), creationKey(times[3], "b"); bytes.Compare(a, b) >= 0 {
		t.Error("creationKey ties not ordered by id")
	}
}
