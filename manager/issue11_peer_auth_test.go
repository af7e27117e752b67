package manager_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/peer"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// peerClient is a hand-written PeerService client: no per-call
// credentials, the test sets the authorization header itself.
func peerClient(t *testing.T, addr string) delegatev1.PeerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return delegatev1.NewPeerServiceClient(conn)
}

func withAuth(t *testing.T, header string) context.Context {
	if header == "" {
		return t.Context()
	}
	return metadata.AppendToOutgoingContext(t.Context(), "authorization", header)
}

// The peer token opens PeerService only, and only the peer token does:
// every other credential on PeerService, and the peer token on the
// operator and delegate services, is refused, and nothing runs or
// connects.
func TestIssue11PeerTokenConfinedToPeerService(t *testing.T) {
	c := newFakeCluster()
	b := mustReplica(t, c, "replica-b", replicaOpts{})
	far := startAgent(t, b.srv.Addr(), "far", []string{"blue"}, 2, nil)
	waitListed(t, b.srv.Addr(), 1)
	pc := peerClient(t, b.srv.Addr())
	run := func(ctx context.Context, id string) error {
		_, err := pc.RunTask(ctx, &delegatev1.RunTaskRequest{TaskId: id, Kind: "ping", Selectors: []string{"blue"},
			Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
		return err
	}
	for _, tc := range []struct{ name, header string }{
		{"no token", ""},
		{"operator token", "Bearer " + operatorToken},
		{"delegate token", "Bearer " + delegateToken},
		{"peer token cut short", "Bearer " + peerToken[:len(peerToken)-1]},
		{"peer token with a suffix", "Bearer " + peerToken + "x"},
		{"peer token without Bearer", peerToken},
		{"peer token, lowercase bearer", "bearer " + peerToken},
	} {
		id := "attack-" + tc.name
		if err := run(withAuth(t, tc.header), id); status.Code(err) != codes.Unauthenticated {
			t.Errorf("PeerService.RunTask with %s = %v, want Unauthenticated", tc.name, err)
		}
		if n := far.count(id); n != 0 {
			t.Errorf("PeerService.RunTask with %s ran the task %d times, want never", tc.name, n)
		}
	}
	// The peer token twice (a second header a proxy might add) is refused
	// too: one credential per call.
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+peerToken, "authorization", "Bearer "+operatorToken)
	if err := run(ctx, "attack-two-headers"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("PeerService.RunTask with two authorization headers = %v, want Unauthenticated", err)
	}
	// The control: the peer token runs it.
	if err := run(withAuth(t, "Bearer "+peerToken), "peer-ok"); err != nil || far.count("peer-ok") != 1 {
		t.Fatalf("PeerService.RunTask with the peer token = %v, ran %d times; want it run once", err, far.count("peer-ok"))
	}

	// The peer token on the operator API.
	conn, err := grpc.NewClient(b.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := delegatev1.NewManagerServiceClient(conn)
	pctx := withAuth(t, "Bearer "+peerToken)
	if _, err := api.ListDelegates(pctx, &delegatev1.ListDelegatesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ManagerService.ListDelegates with the peer token = %v, want Unauthenticated", err)
	}
	if _, err := api.Ping(pctx, &delegatev1.PingRequest{Selectors: []string{"blue"}}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ManagerService.Ping with the peer token = %v, want Unauthenticated", err)
	}
	if _, err := api.TagDelegate(pctx, &delegatev1.TagDelegateRequest{Name: "far", Add: []string{"stolen"}}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ManagerService.TagDelegate with the peer token = %v, want Unauthenticated", err)
	}
	// The peer token on the delegate service.
	_, _, err = dialWire(t, b.srv.Addr(), peerToken, &delegatev1.Hello{Name: "intruder", Capacity: 1, InstanceId: "x"})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("DelegateService.Connect with the peer token = %v, want Unauthenticated", err)
	}
	// Nothing changed: one delegate, untagged, no record of the intruder.
	got := waitListed(t, b.srv.Addr(), 1)
	if got[0].GetName() != "far" || len(got[0].GetOperatorTags()) != 0 {
		t.Errorf("after the attacks ListDelegates = %v, want far alone, without operator tags", got)
	}
	if _, ok := c.record("intruder"); ok {
		t.Error("the cluster records a delegate the peer token connected")
	}
	if n := far.count("attack-two-headers"); n != 0 {
		t.Errorf("the two-header call ran %d times", n)
	}
}

// The peer link is TLS when the listener is: a replica verifies its
// peer's certificate (tls.insecure is the only plaintext), and a plaintext
// client, even with the peer token, gets nothing from a TLS replica.
func TestIssue11PeerLinkTLS(t *testing.T) {
	caFile, certFile, keyFile := writeCerts(t, t.TempDir())
	tlsCfg := func(cfg *manager.Config) {
		cfg.TLS.Insecure, cfg.TLS.CertFile, cfg.TLS.KeyFile = false, certFile, keyFile
	}
	ctls, err := peer.ClientTLS(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	withTLS := func(pc *peer.Config) { pc.TLS = ctls }
	c := newFakeCluster()
	a := mustReplica(t, c, "replica-a", replicaOpts{cfg: tlsCfg, peer: withTLS})
	b := mustReplica(t, c, "replica-b", replicaOpts{cfg: tlsCfg, peer: withTLS})
	acfg := agent.DefaultConfig()
	acfg.Manager, acfg.Token, acfg.Name, acfg.Tags = b.srv.Addr(), delegateToken, "far", []string{"blue"}
	acfg.TLS.CAFile = caFile
	far := runTestAgent(t, acfg, testLogger(t), &agent.TaskHandler{Name: "far", Version: "test"}, nil)

	op, octx := operatorTLS(t, a.srv.Addr(), caFile)
	waitFor(t, 10*time.Second, func() bool {
		r, err := op.ListDelegates(octx, &delegatev1.ListDelegatesRequest{})
		return err == nil && len(r.GetDelegates()) == 1
	}, "replica A to list far")
	info, err := op.Ping(octx, &delegatev1.PingRequest{Selectors: []string{"blue"}})
	if err != nil || info.GetOutcome().GetPing().GetDelegateName() != "far" || far.count(info.GetId()) != 1 {
		t.Fatalf("ping [blue] on replica A over TLS = %v, %v; want it run on far", info, err)
	}

	// Plaintext to a TLS replica, with the right token.
	pc := peerClient(t, b.srv.Addr())
	ctx, cancel := context.WithTimeout(withAuth(t, "Bearer "+peerToken), 2*time.Second)
	defer cancel()
	_, err = pc.RunTask(ctx, &delegatev1.RunTaskRequest{TaskId: "plain", Kind: "ping", Selectors: []string{"blue"},
		Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
	if err == nil || far.count("plain") != 0 {
		t.Errorf("plaintext RunTask on a TLS replica = %v (ran %d times), want refused", err, far.count("plain"))
	}
	// A certificate the client cannot verify: a CA of its own.
	otherCA, _, _ := writeCerts(t, filepath.Join(t.TempDir()))
	creds, err := credentials.NewClientTLSFromFile(otherCA, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(b.srv.Addr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = delegatev1.NewPeerServiceClient(conn).RunTask(ctx, &delegatev1.RunTaskRequest{TaskId: "unverified", Kind: "ping",
		Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
	if err == nil {
		t.Error("RunTask to a replica whose certificate the client cannot verify succeeded")
	}
	if _, err := peer.New(peer.Config{Replica: "x", Token: "short", Store: c, Members: members{c: c}}, b.srv.Dispatcher(), testLogger(t)); err == nil {
		t.Error("peer.New accepted a peer token of 5 characters")
	}
}
