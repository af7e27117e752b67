package manager_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10WatchTaskEndsAtShutdown: a WatchTask open on a task that is
// not final (an async ping no delegate can take) ends Unavailable when
// the manager closes, and Close returns without waiting for
// shutdown_timeout (30 s here). The bounds below are far under it: a
// liveness check, not a speed measurement.
func TestIssue10WatchTaskEndsAtShutdown(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 30 * time.Second
	const within = 10 * time.Second
	srv := mustManager(t, func(c *manager.Config) {
		c.ShutdownTimeout = config.Duration(shutdownTimeout)
		c.Dispatch.QueueTimeout = config.Duration(time.Minute)
		c.Dispatch.TaskDeadline = config.Duration(time.Minute)
	})
	c, ctx := operator(t, srv.Addr())
	info, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true, Selectors: []string{"nobody"}})
	if err != nil {
		t.Fatalf("Ping(async) error: %v", err)
	}
	watch, err := c.WatchTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
	if err != nil {
		t.Fatalf("WatchTask(%s): %v", info.GetId(), err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("WatchTask(%s) first Recv: %v", info.GetId(), err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()

	closed := make(chan error, 1)
	go func() { closed <- srv.Close(context.Background()) }()
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("WatchTask at shutdown ended with %v, want Unavailable", err)
		}
	case <-time.After(within):
		t.Fatalf("WatchTask still open %s after Close began (shutdown_timeout %s)", within, shutdownTimeout)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(within):
		t.Fatalf("Close has not returned %s after it began (shutdown_timeout %s)", within, shutdownTimeout)
	}
}

// issue10Connector stores a connector (and its builtin credential) that
// no agent serves: its mutations stay queued.
func issue10Connector(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context) {
	t.Helper()
	if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "k", Value: []byte("shutdown-test-secret")}); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
		Identifier: "down", Name: "down", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
		AccessKeyId: "AKIASHUTDOWN", SecretAccessKey: "builtin:k", Region: emuRegion, EndpointUrl: "http://127.0.0.1:1",
		SecretNamePrefix: "app", DelegateSelectors: []string{"nobody"},
	}}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
}

// issue10Create is a create of app/NAME with request id rid, waited for.
func issue10Create(name, rid string) *delegatev1.SecretRequest {
	return &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "down"}, RequestId: rid,
		Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: name,
			Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "v"}}}}}
}

// wantReleasedAtShutdown checks how a waiting mutation's call ended when
// its manager closed: Unavailable (the CLI retries it under its request
// id) naming the task, which is stored and runs later; not the
// transport's end after shutdown_timeout.
func wantReleasedAtShutdown(t *testing.T, err error, id string) {
	t.Helper()
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.Unavailable || !strings.Contains(msg, "task "+id+" is stored and runs once a manager is back") {
		t.Errorf("waiting Secret(create) at shutdown ended with %v, want Unavailable naming task %s as stored", err, id)
	}
}

// TestIssue10WaitingMutationEndsAtShutdown: a sibling of WatchTask at
// shutdown. `smd secret create` without --async waits for its stored
// task; when the manager closes, the call ends Unavailable naming the
// task (stored, it runs after the restart) and Close returns, instead of
// both waiting for shutdown_timeout (30 s here). The bounds are a
// liveness check, far under it.
func TestIssue10WaitingMutationEndsAtShutdown(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 30 * time.Second
	const within = 10 * time.Second
	srv := mustManager(t, func(c *manager.Config) {
		c.ShutdownTimeout = config.Duration(shutdownTimeout)
		c.Dispatch.QueueTimeout = config.Duration(time.Minute)
		c.Dispatch.TaskDeadline = config.Duration(time.Minute)
	})
	c, ctx := operator(t, srv.Addr())
	issue10Connector(t, c, ctx)
	ended := make(chan error, 1)
	go func() {
		_, err := c.Secret(ctx, issue10Create("waiting", "wait-1"))
		ended <- err
	}()
	var id string
	waitFor(t, 5*time.Second, func() bool {
		l, err := c.ListTasks(ctx, &delegatev1.ListTasksRequest{State: delegatev1.TaskState_QUEUED})
		if err != nil || len(l.GetTasks()) != 1 {
			return false
		}
		id = l.GetTasks()[0].GetId()
		return true
	}, "the create to be queued")

	closed := make(chan error, 1)
	go func() { closed <- srv.Close(context.Background()) }()
	select {
	case err := <-ended:
		wantReleasedAtShutdown(t, err, id)
	case <-time.After(within):
		t.Fatalf("Secret(create) still waiting %s after Close began (shutdown_timeout %s)", within, shutdownTimeout)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(within):
		t.Fatalf("Close has not returned %s after it began (shutdown_timeout %s)", within, shutdownTimeout)
	}
}
