package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// latencies summarizes a set of measured durations.
type latencies struct {
	N                   int
	P50, P90, P99, Max  time.Duration
	Mean                time.Duration
	sorted              []time.Duration
	errors, dropped     int
	elapsed             time.Duration
	firstErr            error
	throughputPerSecond float64
}

func summarize(d []time.Duration) latencies {
	s := slices.Clone(d)
	slices.Sort(s)
	l := latencies{N: len(s), sorted: s}
	if len(s) == 0 {
		return l
	}
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	l.Mean = sum / time.Duration(len(s))
	l.P50, l.P90, l.P99, l.Max = quantile(s, 0.50), quantile(s, 0.90), quantile(s, 0.99), s[len(s)-1]
	return l
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func (l latencies) String() string {
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s errors=%d", l.N, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), l.errors)
}

// ms formats d in milliseconds with enough precision for sub-ms values.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.3fms", v)
	case v < 1000:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fs", v/1000)
	}
}

// call is one request of a load run; it returns an error when the request
// failed or its result was not the expected one.
type call func(ctx context.Context, i int) error

// openLoop offers calls at rate per second for d, whatever the latency of
// earlier calls (an open system, as clients submitting tasks are): each
// call runs on a goroutine of its own, so a slow call never holds back the
// next one, and each is timed from the moment it is made. (Timing from the
// scheduled moment would add the load generator's own timer lateness, about
// a millisecond on an idle VM, to every call.) A call that would exceed
// maxInFlight is not made and counted as dropped.
func openLoop(ctx context.Context, rate float64, d time.Duration, maxInFlight int, c call) latencies {
	total := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	lat := make([]time.Duration, total)
	ok := make([]bool, total)
	var (
		wg       sync.WaitGroup
		inFlight atomic.Int64
		errs     atomic.Int64
		dropped  int
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for i := 0; i < total; {
		due := min(total, int(time.Since(start)/interval)+1)
		for ; i < due; i++ {
			if inFlight.Load() >= int64(maxInFlight) {
				dropped++
				continue
			}
			inFlight.Add(1)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				defer inFlight.Add(-1)
				t0 := time.Now()
				if err := c(ctx, i); err != nil {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
					return
				}
				lat[i], ok[i] = time.Since(t0), true
			}(i)
		}
		if ctx.Err() != nil {
			break
		}
		// Sleep until the next call is due; at high rates this sleeps
		// less than the scheduler's granularity and calls go in bursts.
		if next := start.Add(time.Duration(i) * interval); time.Until(next) > 0 {
			time.Sleep(time.Until(next))
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	var got []time.Duration
	for i, v := range lat {
		if ok[i] {
			got = append(got, v)
		}
	}
	l := summarize(got)
	l.errors, l.dropped, l.elapsed, l.firstErr = int(errs.Load()), dropped, elapsed, firstErr
	l.throughputPerSecond = float64(l.N) / elapsed.Seconds()
	return l
}

// closedLoop runs workers that each make calls back to back for d (or n
// calls in all when n > 0), and reports their latencies and throughput.
func closedLoop(ctx context.Context, workers int, d time.Duration, n int, c call) latencies {
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		errs     atomic.Int64
		errOnce  sync.Once
		firstErr error
		mu       sync.Mutex
		all      []time.Duration
	)
	start := time.Now()
	stopAt := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if n > 0 && i >= n || n == 0 && time.Now().After(stopAt) {
					break
				}
				t0 := time.Now()
				if err := c(ctx, i); err != nil {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	l := summarize(all)
	l.errors, l.elapsed, l.firstErr = int(errs.Load()), elapsed, firstErr
	l.throughputPerSecond = float64(l.N) / elapsed.Seconds()
	return l
}
