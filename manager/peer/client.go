package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/scopes"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// pool holds one client connection per peer address, made on first use
// and closed by close.
type pool struct {
	creds credentials.TransportCredentials
	auth  bearer

	mu     sync.Mutex // guards conns and closed
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newPool(token string, tc *tls.Config) *pool {
	p := &pool{conns: map[string]*grpc.ClientConn{}, auth: bearer{token: token}}
	if tc == nil {
		p.creds = insecure.NewCredentials()
	} else {
		p.creds = credentials.NewTLS(tc)
		p.auth.secure = true
	}
	return p
}

// client returns the PeerService client of addr.
func (p *pool) client(addr string) (delegatev1.PeerServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("peer link closed")
	}
	c := p.conns[addr]
	if c == nil {
		var err error
		c, err = grpc.NewClient(addr, grpc.WithTransportCredentials(p.creds), grpc.WithPerRPCCredentials(p.auth))
		if err != nil {
			return nil, err
		}
		p.conns[addr] = c
	}
	return delegatev1.NewPeerServiceClient(c), nil
}

// close closes every connection; client fails afterwards.
func (p *pool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for addr, c := range p.conns {
		errs = append(errs, c.Close())
		delete(p.conns, addr)
	}
	return errors.Join(errs...)
}

// bearer sends the peer token with every call. It refuses to send it
// over plaintext unless the pool was built without TLS (tls.insecure).
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// runTask forwards req to a replica through c and translates the answer
// for the dispatcher (dispatch.Forwarder's errors).
func runTask(ctx context.Context, c delegatev1.PeerServiceClient, replica string, req dispatch.SubmitRequest) (dispatch.Forwarded, error) {
	resp, err := c.RunTask(ctx, &delegatev1.RunTaskRequest{
		TaskId: req.ForwardedID(), Kind: req.Kind, Selectors: req.Selectors, Scope: scopes.Proto(req.Scope), Payload: req.Payload,
	})
	if err == nil {
		if resp.GetOutcome() == nil {
			return dispatch.Forwarded{}, fmt.Errorf("replica %s answered without an outcome", replica)
		}
		return dispatch.Forwarded{Outcome: resp.GetOutcome(), Delegate: resp.GetDelegate()}, nil
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable:
		return dispatch.Forwarded{}, fmt.Errorf("replica %s: %w: %s", replica, dispatch.ErrPeerUnreachable, st.Message())
	case codes.Canceled:
		return dispatch.Forwarded{}, fmt.Errorf("replica %s: %w", replica, context.Canceled)
	case codes.DeadlineExceeded:
		return dispatch.Forwarded{}, fmt.Errorf("replica %s: %w", replica, context.DeadlineExceeded)
	}
	return dispatch.Forwarded{}, fmt.Errorf("replica %s: %s: %s", replica, st.Code(), st.Message())
}

// ClientTLS is the TLS of calls to peers, from the manager's own TLS
// files: peers' certificates are verified against caFile when given,
// else against the system's roots and the certificates of certFile (a
// certificate the replicas share, or a chain that holds their CA); the
// manager's certificate and key are the client certificate (needed when
// the peers' listeners require one, tls.client_ca_file). The name
// verified is the host of each peer's advertise address.
func ClientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	src, file := certFile, "tls.cert_file"
	if caFile != "" {
		roots, src, file = x509.NewCertPool(), caFile, "cluster CA file"
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	n := 0
	for rest := raw; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && b.Type == "CERTIFICATE" {
			roots.AddCert(c)
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificates in %s", file, src)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// deliverGenerated sends a generated value to a replica through c. The
// error names the replica and the status, never the value (the
// receiving replica's messages quote none).
func deliverGenerated(ctx context.Context, c delegatev1.PeerServiceClient, replica, taskID, leaseID string, o *delegatev1.Outcome) error {
	_, err := c.DeliverGenerated(ctx, &delegatev1.DeliverGeneratedRequest{TaskId: taskID, LeaseId: leaseID, Outcome: o})
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	if st.Code() == codes.Unavailable {
		return fmt.Errorf("replica %s: %w: %s", replica, dispatch.ErrPeerUnreachable, st.Message())
	}
	return fmt.Errorf("replica %s: deliver a generated value: %s: %s", replica, st.Code(), st.Message())
}
