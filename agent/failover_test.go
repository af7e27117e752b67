package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// replica is a manager written by hand: it welcomes every stream, sends
// the tasks it was given, never acknowledges a result, and reports the
// Hellos and results it receives, and the tokens it was sent.
type replica struct {
	delegatev1.UnimplementedDelegateServiceServer
	tasks   []*delegatev1.ManagerMessage
	hellos  chan *delegatev1.Hello
	results chan *delegatev1.TaskResult
	streams atomic.Int32
	tokens  chan string
}

func newReplica(tasks ...*delegatev1.ManagerMessage) *replica {
	return &replica{tasks: tasks, hellos: make(chan *delegatev1.Hello, 16),
		results: make(chan *delegatev1.TaskResult, 16), tokens: make(chan string, 16)}
}

func (r *replica) Connect(stream delegatev1.DelegateService_ConnectServer) error {
	r.streams.Add(1)
	md, _ := metadata.FromIncomingContext(stream.Context())
	for _, v := range md.Get("authorization") {
		r.tokens <- v
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	r.hellos <- first.GetHello()
	err = stream.Send(&delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Welcome{Welcome: &delegatev1.Welcome{
		DelegateId: "d", HeartbeatInterval: durationpb.New(time.Hour), LeaseDuration: durationpb.New(time.Hour),
	}}})
	if err != nil {
		return err
	}
	for _, m := range r.tasks {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		if res := m.GetResult(); res != nil {
			r.results <- res
		}
	}
}

// serve serves r on lis (with creds when not nil) and returns a stop
// that drops every stream, as a killed manager does.
func serve(t *testing.T, r *replica, lis net.Listener, creds credentials.TransportCredentials) (stop func()) {
	t.Helper()
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	s := grpc.NewServer(opts...)
	delegatev1.RegisterDelegateServiceServer(s, r)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return s.Stop
}

// reserve returns a 127.0.0.1 address nothing listens on (yet).
func reserve(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// holdHandler runs "long" until release is closed, anything else at once.
type holdHandler struct{ release, started chan struct{} }

func (h holdHandler) Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome {
	if t.GetId() == "long" {
		close(h.started)
		select {
		case <-h.release:
		case <-ctx.Done():
			return &delegatev1.Outcome{Code: delegatev1.Code_CANCELLED}
		}
	}
	return &delegatev1.Outcome{Code: delegatev1.Code_OK}
}

func failoverConfig(t *testing.T, manager string) agent.Config {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Manager, cfg.Token, cfg.Name, cfg.TLS.Insecure = manager, "t", "web", true
	cfg.Reconnect.Initial, cfg.Reconnect.Max = config.Duration(10*time.Millisecond), config.Duration(50*time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s within 30 s", what)
		panic("unreachable")
	}
}

// TestIssue11AgentFailsOverToAnotherManager: an agent given two managers
// connects to the one that answers (the other refuses connections), runs
// a task from it and completes another whose result that manager never
// acknowledges; that manager dies. The agent connects to the other
// address, and its Hello there resumes the running task, the unacked
// result is sent again, and the running task's result goes there too.
func TestIssue11AgentFailsOverToAnotherManager(t *testing.T) {
	t.Parallel()
	addrA, addrB := reserve(t), reserve(t)
	a := newReplica(pingTask("quick", 0), pingTask("long", 0))
	stopA := serve(t, a, listen(t, addrA), nil)

	h := holdHandler{release: make(chan struct{}), started: make(chan struct{})}
	ag := agent.New(failoverConfig(t, addrB+","+addrA), zerolog.Nop(), h, "test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if got := recv(t, a.hellos, "Hello at A"); len(got.GetRunning()) != 0 {
		t.Errorf("first Hello lists running %v, want none", got.GetRunning())
	}
	if r := recv(t, a.results, "quick's result at A"); r.GetTaskId() != "quick" {
		t.Fatalf("first result at A is %q's, want quick's", r.GetTaskId())
	}
	recv(t, h.started, "long to start")

	b := newReplica()
	serve(t, b, listen(t, addrB), nil)
	stopA() // A dies; its address refuses from now on

	hello := recv(t, b.hellos, "Hello at B")
	var running []string
	for _, r := range hello.GetRunning() {
		running = append(running, r.GetTaskId()+"/"+r.GetLeaseId())
	}
	if !slices.Equal(running, []string{"long/lease-long"}) {
		t.Errorf("Hello at B lists running %v, want [long/lease-long] (resumed, not lost)", running)
	}
	if r := recv(t, b.results, "the unacked result at B"); r.GetTaskId() != "quick" || r.GetLeaseId() != "lease-quick" {
		t.Errorf("first result at B = %v, want quick's, sent again", r)
	}
	close(h.release)
	if r := recv(t, b.results, "long's result at B"); r.GetTaskId() != "long" || r.GetOutcome().GetCode() != delegatev1.Code_OK {
		t.Errorf("next result at B = %v, want long's, OK", r)
	}
}

// tlsFiles writes a CA and, for each name, a certificate signed by it that
// holds that DNS name only (no IP address).
func tlsFiles(t *testing.T, names ...string) (caFile string, certs map[string]tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issue 11 test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	certs = map[string]tls.Certificate{}
	for i, name := range names {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		certs[name] = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return caFile, certs
}

// hosts resolves names to 127.0.0.1.
type hosts map[string][]string

func (h hosts) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := h[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestIssue11AgentVerifiesEachAddressAsItsName: every address a name
// resolves to is dialed with that name as the TLS server name. The
// attack: the address of impostor.example answers with a certificate of
// the same CA for smd.example, another name of the same setting. The agent dials it (the test waits
// until it has), refuses the handshake and sends no token there; it
// connects to smd.example's address, whose certificate holds only that
// name (no IP address), so the handshake only succeeds because the
// address is verified as the name it came from.
func TestIssue11AgentVerifiesEachAddressAsItsName(t *testing.T) {
	t.Parallel()
	caFile, certs := tlsFiles(t, "smd.example")
	addrGood := reserve(t)
	impostor := newReplica()
	lisBad := &countingListener{Listener: listen(t, "127.0.0.1:0")}
	serve(t, impostor, lisBad, credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{certs["smd.example"]}}))
	_, portBad, _ := net.SplitHostPort(lisBad.Addr().String())
	_, portGood, _ := net.SplitHostPort(addrGood)

	cfg := failoverConfig(t, "impostor.example:"+portBad+",smd.example:"+portGood)
	cfg.TLS.Insecure, cfg.TLS.CAFile, cfg.Token = false, caFile, "smdd_issue11_planted_token"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ag := agent.New(cfg, zerolog.Nop(), idle{}, "test")
	agent.SetResolver(ag, hosts{"impostor.example": {"127.0.0.1"}, "smd.example": {"127.0.0.1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(30 * time.Second)
	for lisBad.accepted.Load() == 0 { // smd.example's address refuses until the agent tried the impostor
		if time.Now().After(deadline) {
			t.Fatal("the agent never dialed impostor.example's address")
		}
		time.Sleep(10 * time.Millisecond)
	}
	good := newReplica()
	serve(t, good, listen(t, addrGood), credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{certs["smd.example"]}}))
	recv(t, good.hellos, "Hello at smd.example")
	if tok := recv(t, good.tokens, "token at smd.example"); tok != "Bearer smdd_issue11_planted_token" {
		t.Errorf("smd.example got authorization %q, want the agent's token", tok)
	}
	if n := impostor.streams.Load(); n != 0 {
		t.Errorf("impostor.example got %d streams, want 0 (its certificate is not for impostor.example)", n)
	}
	select {
	case tok := <-impostor.tokens:
		t.Errorf("impostor.example received the token %q", tok)
	default:
	}
}
