package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	l := summarize(d)
	for _, tt := range []struct {
		name      string
		got, want time.Duration
	}{
		{"p50", l.P50, 50 * time.Millisecond},
		{"p90", l.P90, 90 * time.Millisecond},
		{"p99", l.P99, 99 * time.Millisecond},
		{"max", l.Max, 100 * time.Millisecond},
		{"mean", l.Mean, 50500 * time.Microsecond},
	} {
		if tt.got != tt.want {
			t.Errorf("summarize(1..100ms).%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if got := summarize(nil); got.N != 0 || got.P99 != 0 {
		t.Errorf("summarize(nil) = %+v, want zero", got)
	}
}

func TestClosedLoopCountsCallsAndErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	l := closedLoop(t.Context(), 4, 0, 100, func(_ context.Context, i int) error {
		if i%10 == 0 {
			return boom
		}
		return nil
	})
	if l.N != 90 || l.errors != 10 || !errors.Is(l.firstErr, boom) {
		t.Errorf("closedLoop(100 calls, every 10th fails) = N %d errors %d first %v, want 90, 10, boom", l.N, l.errors, l.firstErr)
	}
}

func TestOpenLoopOffersEveryCall(t *testing.T) {
	t.Parallel()
	seen := make([]bool, 50)
	l := openLoop(t.Context(), 1000, 50*time.Millisecond, 100, func(_ context.Context, i int) error {
		seen[i] = true
		return nil
	})
	for i, ok := range seen {
		if !ok {
			t.Errorf("openLoop: call %d never made", i)
		}
	}
	if l.N != 50 || l.dropped != 0 {
		t.Errorf("openLoop(1000/s for 50ms) = N %d dropped %d, want 50, 0", l.N, l.dropped)
	}
}
