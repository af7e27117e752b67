package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestItem8MatchKeyUnambiguous: two scope and selector sets share a queue
// and pool key only if they are the same, whatever characters the
// selectors hold (the key must not rely on the tag rule being enforced
// on every path): the reported ["zq\x00zr"] against ["zq", "zr"], the
// separators of the old key, and random lists over an alphabet of them.
func TestItem8MatchKeyUnambiguous(t *testing.T) {
	t.Parallel()
	a := store.Scope{Account: "a"}
	for _, tc := range []struct {
		s1, s2     store.Scope
		sel1, sel2 []string
	}{
		{a, a, []string{"zq\x00zr"}, []string{"zq", "zr"}},
		{store.Scope{}, store.Scope{}, []string{"\x01"}, nil},
		{store.Scope{}, a, []string{"a"}, nil},
		{a, store.Scope{Account: "a", Org: "b"}, []string{"c"}, []string{"b", "c"}},
		{a, a, []string{"1:x"}, []string{"x"}},
		{a, a, []string{""}, nil},
	} {
		if matchKey(tc.s1, tc.sel1) == matchKey(tc.s2, tc.sel2) {
			t.Errorf("matchKey(%q, %q) == matchKey(%q, %q) = %q", tc.s1, tc.sel1, tc.s2, tc.sel2, matchKey(tc.s1, tc.sel1))
		}
	}

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 8))
	alphabet := []string{"a", "\x00", "\x01", ":", "1", "/"}
	word := func() string {
		s := ""
		for range rng.IntN(4) {
			s += alphabet[rng.IntN(len(alphabet))]
		}
		return s
	}
	list := func() []string {
		var out []string
		for range rng.IntN(4) {
			out = append(out, word())
		}
		return out
	}
	scopes := []store.Scope{{}, a, {Account: "a", Org: "b"}, {Account: "a:1"}}
	seen := map[string]string{}
	for range 20000 {
		sc, sel := scopes[rng.IntN(len(scopes))], list()
		what := fmt.Sprintf("%q %q", sc, sel)
		k := matchKey(sc, sel)
		if prev, ok := seen[k]; ok && prev != what {
			t.Fatalf("seed %d: %s and %s share the key %q", seed, prev, what, k)
		}
		seen[k] = what
	}
}

// TestItem8NoSharedQueue: tasks selecting ["zq\x00zr"] (submitted past
// the API's checks) and ["zq", "zr"] wait in different queues, so a
// delegate tagged zq and zr gets only the task it matches, in either
// order of submission.
func TestItem8NoSharedQueue(t *testing.T) {
	t.Parallel()
	for _, first := range [][]string{{"zq\x00zr"}, {"zq", "zr"}} {
		cfg := Config{
			LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(time.Second),
			QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(time.Minute), MaxAttempts: 3,
		}
		d := New(cfg, nil, zerolog.Nop(), NewMetrics())
		submit := func(sel []string) *task {
			tk, err := d.submit(context.Background(), SubmitRequest{Kind: "ping", Selectors: sel,
				Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
			if err != nil {
				t.Fatal(err)
			}
			return tk
		}
		var nul, pair *task
		if first[0] == "zq" {
			pair, nul = submit([]string{"zq", "zr"}), submit([]string{"zq\x00zr"})
		} else {
			nul, pair = submit([]string{"zq\x00zr"}), submit([]string{"zq", "zr"})
		}
		out := outbox.New[*delegatev1.ManagerMessage](0)
		if _, err := d.connect(&delegatev1.Hello{Name: "dg", Tags: []string{"zq", "zr"}, Capacity: 4, InstanceId: "p"},
			identity.Identity{Kind: identity.Delegate, Name: "tok"}, out); err != nil {
			t.Fatal(err)
		}
		done, cancel := context.WithCancel(context.Background())
		cancel() // Take returns what is queued, without waiting
		var got []string
		for _, m := range out.Take(done, nil) {
			if tk := m.GetTask(); tk != nil {
				got = append(got, tk.GetId())
			}
		}
		if !slices.Equal(got, []string{pair.id}) {
			t.Errorf("first %q: the delegate tagged zq, zr received %q, want only the [zq zr] task %s (not %s)", first, got, pair.id, nul.id)
		}
		d.mu.Lock()
		state := nul.state
		d.mu.Unlock()
		if state != store.StateQueued {
			t.Errorf("first %q: the [zq\\x00zr] task is %v, want still queued", first, state)
		}
	}
}
