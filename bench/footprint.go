package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// footprintResult is section 4.
type footprintResult struct {
	BinaryBytes  int64
	StartToReady []time.Duration // one per start of a fresh agent process
	IdleRSS      int64           // a connected agent doing nothing
	IdleAnon     int64           // the private part of IdleRSS
	LoadRSS      int64           // the busiest bench agent's peak (VmHWM) after the load sections
}

func (f footprintResult) medianStart() time.Duration {
	s := slices.Clone(f.StartToReady)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// measureStarts starts a fresh agent process n times, each time measuring
// the time from exec to the manager listing it as connected, and reads
// the RSS of the last one after it has been idle for a while.
func measureStarts(m *manager, bin string, n int, idle time.Duration, o options) (footprintResult, error) {
	var f footprintResult
	st, err := os.Stat(bin)
	if err != nil {
		return f, err
	}
	f.BinaryBytes = st.Size()
	for i := range n {
		name := fmt.Sprintf("footprint-%d", i)
		p, took, err := m.startAgent(bin, name, []string{"footprint"}, 10, nil)
		if err != nil {
			return f, err
		}
		f.StartToReady = append(f.StartToReady, took)
		if i == n-1 {
			time.Sleep(idle)
			mem, err := readMem(p.Pid())
			if err != nil {
				p.Stop(stopWait)
				return f, err
			}
			f.IdleRSS, f.IdleAnon = mem.RSS, mem.Anon
		}
		p.Stop(stopWait)
	}
	o.logf("  binary %s (%s); start to ready, median of %d: %s; idle RSS after %s: %s (private %s)",
		mib(f.BinaryBytes), filepath.Base(bin), n, ms(f.medianStart()), idle, mib(f.IdleRSS), mib(f.IdleAnon))
	return f, nil
}
