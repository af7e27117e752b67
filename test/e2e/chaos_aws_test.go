package e2e

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

// The chaos suite's AWS: the emulator behind a server that holds each
// reply after serving it.

// heldAWS serves the emulator, holding each reply for hold after the
// request was served: a delegate killed meanwhile leaves a change made at
// AWS whose result never reached the manager, the case where a re-run must
// not make a second version. The emulator's own latency (SetLatency)
// delays requests before they are served, so a kill then leaves nothing
// behind.
func heldAWS(t testing.TB, emu *awsemu.Server, hold time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, r)
		select {
		case <-time.After(hold):
		case <-r.Context().Done():
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})}
	go srv.Serve(ln) //nolint:errcheck // Serve returns ErrServerClosed after Close.
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
