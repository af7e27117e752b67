package manager_test

import (
	"fmt"
	"sync"
	"testing"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10TagDelegateWhileConnecting: an operator retags a delegate
// while its agent (re)connects. The Connect handler reads the delegate's
// tags (for its "delegate connected" log line) while TagDelegate writes
// them: run with -race, an unlocked read fails the test. Each stream is
// a reconnect of one agent process, so every one of them is the
// delegate TagDelegate retags.
func TestIssue10TagDelegateWhileConnecting(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			req := &delegatev1.TagDelegateRequest{Name: "r", Add: []string{fmt.Sprintf("t%d", i%2)}, Remove: []string{fmt.Sprintf("t%d", (i+1)%2)}}
			if _, err := c.TagDelegate(ctx, req); err != nil {
				t.Errorf("TagDelegate(%v): %v", req, err)
				return
			}
		}
	}()
	for range 30 {
		mustWire(t, srv.Addr(), delegateToken, &delegatev1.Hello{Name: "r", InstanceId: "inst-r", Capacity: 1})
	}
	close(stop)
	wg.Wait()
}
