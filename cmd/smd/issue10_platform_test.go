package main

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10ManagerWiresPlatform: the platform runner is built by
// cmd/smd (newManager, for `smd manager` and `smd dev`), not by the
// server: a task selecting smd:platform reaches the manager's own runner
// (which refuses anything but secret tasks, naming itself), while a
// server built without it has no platform delegate and the task ends
// NO_ELIGIBLE_DELEGATE.
func TestIssue10ManagerWiresPlatform(t *testing.T) {
	t.Parallel()
	key, err := seal.LoadKey("", seal.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	cfg := manager.DefaultConfig()
	cfg.Listen, cfg.HTTPListen, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.TLS.Insecure, cfg.MasterKey = true, key
	cfg.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken("issue10-delegate")}}
	cfg.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken("issue10-operator")}}
	cfg.Dispatch.QueueTimeout = config.Duration(200 * time.Millisecond)

	run := func(t *testing.T, srv *manager.Server) *delegatev1.TaskInfo {
		t.Helper()
		if err := srv.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close(context.Background()) })
		sub, err := srv.Dispatcher().Submit(t.Context(), dispatch.SubmitRequest{
			Kind: "ping", Selectors: []string{manager.PlatformTag},
			Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}},
		})
		if err != nil {
			t.Fatalf("Submit: %v", err)
		}
		<-sub.Done()
		return sub.Info()
	}
	t.Run("newManager", func(t *testing.T) {
		t.Parallel()
		c := cfg
		c.DataDir = t.TempDir()
		srv, err := newManager(c, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		info := run(t, srv)
		if info.GetDelegate() != manager.PlatformTag || info.GetOutcome().GetCode() != delegatev1.Code_INVALID_ARGUMENT {
			t.Errorf("ping for %s on newManager's server: delegate %q, outcome %v; want run by %s (INVALID_ARGUMENT: the platform runs only secret tasks)",
				manager.PlatformTag, info.GetDelegate(), info.GetOutcome(), manager.PlatformTag)
		}
	})
	t.Run("without", func(t *testing.T) {
		t.Parallel()
		c := cfg
		c.DataDir = t.TempDir()
		srv, err := manager.New(c, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		info := run(t, srv)
		if info.GetDelegate() != "" || info.GetOutcome().GetCode() != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
			t.Errorf("ping for %s on a server without SetPlatform: delegate %q, outcome %v; want NO_ELIGIBLE_DELEGATE",
				manager.PlatformTag, info.GetDelegate(), info.GetOutcome())
		}
	})
}
