package manager_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) { c.HTTPListen = "127.0.0.1:0" })
	startAgent(t, srv.Addr(), "m1", nil, 1, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)
	ping(t, c, ctx, &delegatev1.PingRequest{})

	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": `smd_task_outcomes_total{code="OK"} 1`,
	} {
		resp, err := http.Get("http://" + srv.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %q, want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}
	for _, metric := range []string{"smd_connected_delegates 1", "smd_queued_tasks 0", "smd_dispatch_latency_seconds_count 1"} {
		resp, _ := http.Get("http://" + srv.HTTPAddr() + "/metrics")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), metric) {
			t.Errorf("/metrics lacks %q", metric)
		}
	}
}

func TestGRPCHealth(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health Check = %v, %v; want SERVING (no token needed)", resp, err)
	}
}

// writeCerts makes a CA and a certificate for 127.0.0.1 signed by it.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "manager"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string][]byte{
		caFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

func TestTLS(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := writeCerts(t, t.TempDir())
	srv := mustManager(t, func(c *manager.Config) {
		c.TLS.Insecure, c.TLS.CertFile, c.TLS.KeyFile = false, certFile, keyFile
	})
	run := func(tweak func(*agent.Config)) (connected bool) {
		cfg := agent.DefaultConfig()
		cfg.Manager, cfg.Token, cfg.Name = srv.Addr(), delegateToken, "tls-agent"
		cfg.Reconnect.Initial, cfg.Reconnect.Max = config.Duration(20*time.Millisecond), config.Duration(50*time.Millisecond)
		tweak(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		h := &agent.TaskHandler{Name: cfg.Name}
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() { agent.New(cfg, testLogger(t), h, "test").Run(ctx); close(done) }()
		defer func() { <-done }()
		c, octx := operatorTLS(t, srv.Addr(), caFile)
		for ctx.Err() == nil {
			if r, err := c.ListDelegates(octx, &delegatev1.ListDelegatesRequest{}); err == nil && len(r.GetDelegates()) == 1 {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	if !run(func(c *agent.Config) { c.TLS.CAFile = caFile }) {
		t.Error("agent with the CA file did not connect over TLS")
	}
	if run(func(c *agent.Config) {}) {
		t.Error("agent without the CA connected to a manager whose certificate it cannot verify")
	}
	if run(func(c *agent.Config) { c.TLS.Insecure = true }) {
		t.Error("plaintext agent connected to a TLS manager")
	}
}
