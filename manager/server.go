// Package manager is the manager: the gRPC services agents and operators
// talk to, the delegate registry, the dispatcher (selector matching,
// leases) and the HTTP endpoints for health and metrics.
package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/api"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/oidc"
	"github.com/smdelegate/smdelegate/manager/peer"
	"github.com/smdelegate/smdelegate/manager/resolve"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/stream"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Server is a running manager. Build it with New, start it with Start,
// stop it with Close.
type Server struct {
	cfg   Config
	base  zerolog.Logger // without a component: children name theirs
	log   zerolog.Logger
	store store.Store
	disp  *dispatch.Dispatcher
	m     *dispatch.Metrics
	// platform runs the tasks the manager runs itself (SetPlatform);
	// platformWait joins the goroutines of its in-process delegate.
	platform     dispatch.TaskRunner
	platformWait func()

	sealer *seal.Sealer
	issuer *oidc.Issuer
	api    *api.Service
	limits *dispatch.Limiter
	dsvc   *stream.Service

	grpc   *grpc.Server
	health *health.Server
	http   *http.Server
	lis    net.Listener
	hlis   net.Listener
	// oidcHTTP and olis serve only the OIDC documents, when oidc.listen
	// is set.
	oidcHTTP *http.Server
	olis     net.Listener

	// il is the store's manager lock (instancelock.go).
	il instanceLock
	// rep is this manager as a replica of a cluster (replica.go); nil for
	// a single manager.
	rep *replica
	// peer is the link to the other replicas of a cluster (SetPeer, or
	// built by startReplica); nil for a single manager.
	peer *peer.Node

	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  chan struct{}
}

// New validates cfg and opens the store cfg.Store names (bolt under
// cfg.DataDir, or PostgreSQL; for a replica of a cluster, opened for its
// new replica ID) unless st is given. Nothing listens until Start.
func New(cfg Config, log zerolog.Logger, st store.Store) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var replicaID string
	if cfg.Cluster.Name != "" {
		replicaID = newReplicaID()
	}
	if st == nil {
		var err error
		if st, err = openStore(cfg, replicaID, log); err != nil {
			return nil, err
		}
	}
	sealer, err := seal.New(cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	m := dispatch.NewMetrics()
	s := &Server{sealer: sealer, cfg: cfg, base: log, log: log.With().Str("component", "manager").Logger(), store: st, m: m, ready: make(chan struct{})}
	s.il.failed = make(chan struct{})
	s.disp = dispatch.New(cfg.Dispatch, st, log.With().Str("component", "dispatcher").Logger(), m)
	s.disp.SetSealer(sealer)
	s.limits = dispatch.NewLimiter(cfg.Limits, m)
	s.disp.SetLimiter(s.limits)
	if replicaID != "" {
		if err := s.newReplica(replicaID); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// SetPlatform gives the manager the runner of the tasks it runs itself
// (platform.New from platform.endpoints.allow: oidc connectors with
// oidc_connectivity: platform), before Start. cmd/smd builds it, beside
// the agent's task handler: the one place that wires AWS clients to task
// code; the Server only runs what it is given. Without one, such tasks
// find no delegate (NO_ELIGIBLE_DELEGATE).
func (s *Server) SetPlatform(r dispatch.TaskRunner) { s.platform = r }

// storeOpenTimeout bounds connecting to and migrating a PostgreSQL store
// at startup.
const storeOpenTimeout = 30 * time.Second

// openStore opens the store cfg.Store names, with the retention of
// cfg.TaskRetention; for replica (cluster.name set, else ""), a
// PostgreSQL store fenced by that replica's ownership of tasks. Neither
// its log lines nor its errors hold the DSN, which may carry a password:
// they name the server and database only.
func openStore(cfg Config, replica string, log zerolog.Logger) (store.Store, error) {
	slog := log.With().Str("component", "store").Logger()
	switch cfg.Store.Driver {
	case StorePostgres:
		ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
		defer cancel()
		db, err := postgres.Open(ctx, cfg.Store.DSN, postgres.Options{
			KeepFinished:  cfg.TaskRetention.D(),
			Logger:        slog,
			Replica:       replica,
			LeaseDuration: cfg.Dispatch.LeaseDuration.D(),
		})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		slog.Info().Str("driver", StorePostgres).Str("database", postgres.Describe(cfg.Store.DSN)).Msg("store opened")
		return db, nil
	default:
		path := filepath.Join(cfg.DataDir, bolt.FileName)
		db, err := bolt.Open(path, bolt.Options{
			KeepFinished: cfg.TaskRetention.D(),
			Logger:       slog,
		})
		if err != nil {
			return nil, err
		}
		slog.Info().Str("driver", StoreBolt).Str("path", path).Msg("store opened")
		return db, nil
	}
}

// Start takes the store's manager lock (PostgreSQL: a manager already on
// the database makes it fail, naming that one), binds the builtin
// credentials of connectors stored before bindings (MigrateBindings),
// recovers unfinished tasks, then listens on
// cfg.Listen (gRPC), cfg.HTTPListen (health, metrics, and the OIDC
// documents unless cfg.OIDC.Listen is set) and cfg.OIDC.Listen (only the
// OIDC documents), and serves in the background.
func (s *Server) Start(ctx context.Context) (err error) {
	if err := s.takeLock(ctx); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			s.releaseLock(context.Background())
		}
	}()
	s.lis, err = net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if s.cfg.HTTPListen != "" {
		s.hlis, err = net.Listen("tcp", s.cfg.HTTPListen)
		if err != nil {
			s.lis.Close()
			return fmt.Errorf("http_listen: %w", err)
		}
	}
	if s.cfg.OIDC.Listen != "" {
		s.olis, err = net.Listen("tcp", s.cfg.OIDC.Listen)
		if err != nil {
			s.lis.Close()
			if s.hlis != nil {
				s.hlis.Close()
			}
			return fmt.Errorf("oidc.listen: %w", err)
		}
	}
	defer func() {
		if err != nil {
			s.lis.Close()
			for _, l := range []net.Listener{s.hlis, s.olis} {
				if l != nil {
					l.Close()
				}
			}
		}
	}()
	s.issuer, err = oidc.New(ctx, s.store, s.sealer, oidc.Options{
		IssuerURL:   s.issuerURL(),
		TokenTTL:    s.cfg.OIDC.TokenTTL.D(),
		RotateAfter: s.cfg.OIDC.RotateAfter.D(),
		Logger:      s.base, // oidc names its own component
	})
	if err != nil {
		return fmt.Errorf("oidc issuer: %w", err)
	}
	res := resolve.New(s.store, s.sealer, s.issuer, s.log)
	s.api = api.New(s.disp, s.store, s.sealer, res, s.limits, s.log)
	s.disp.SetResolver(res.Payload)
	if n, err := res.MigrateBindings(ctx); err != nil {
		return fmt.Errorf("bind the builtin credentials of stored connectors: %w", err)
	} else if n > 0 {
		s.log.Info().Int("connectors", n).Msg("bound the builtin credential references of connectors stored before bindings")
	}
	if err := s.disp.LoadTags(ctx); err != nil {
		return fmt.Errorf("load delegate tags: %w", err)
	}
	// Tasks an older manager finished keep their whole payload, secret
	// values included: drop the values once, before anything else runs.
	scrubbed, err := s.store.ScrubFinished(ctx, s.disp.ScrubStored)
	if err != nil {
		return fmt.Errorf("scrub finished tasks: %w", err)
	}
	if scrubbed > 0 {
		s.log.Info().Int("tasks", scrubbed).Msg("dropped the secret values of tasks finished by an older version")
	}
	if err := s.startReplica(ctx, s.advertise()); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			s.stopReplica(context.Background())
		}
	}()
	n, err := s.disp.Recover(ctx)
	if err != nil {
		return fmt.Errorf("recover tasks: %w", err)
	}
	if n > 0 {
		s.log.Info().Int("tasks", n).Msg("recovered unfinished tasks")
	}
	creds, err := s.serverCreds()
	if err != nil {
		return err
	}
	auth := newAuthenticator(s.cfg.Auth)
	s.grpc = grpc.NewServer(
		grpc.Creds(creds),
		// Text that is not UTF-8 is refused first, naming its field
		// (codec.go); then the token is checked, then the limits.
		grpc.ForceServerCodecV2(newWireCodec()),
		grpc.ChainUnaryInterceptor(textUnary, auth.unary, api.RateLimit(s.limits)),
		grpc.ChainStreamInterceptor(textStream, auth.stream),
		// Agents ping every 30 s (below typical 60 s LB idle timeouts);
		// allow that, and probe idle agents ourselves.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	s.dsvc = stream.New(s.disp, s.disp.Logger())
	delegatev1.RegisterDelegateServiceServer(s.grpc, s.dsvc)
	delegatev1.RegisterManagerServiceServer(s.grpc, s.api)
	if s.peer != nil {
		s.peer.Register(s.grpc) // it checks the peer token itself
	}
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.disp.Sweep(runCtx, s.sweepEvery()) }()
	go func() { defer s.wg.Done(); s.issuer.Run(runCtx) }()
	if s.platform != nil {
		s.platformWait = s.disp.StartPlatform(runCtx, s.platform, s.cfg.Platform.Concurrency)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.lis); err != nil {
			s.log.Error().Err(err).Msg("grpc server stopped")
		}
	}()
	if s.hlis != nil {
		s.http = s.serveHTTP(s.hlis, s.httpHandler(), "http server stopped")
	}
	if s.olis != nil {
		// Only what AWS IAM reads: the issuer's handler answers its two
		// documents (under the issuer URL's path) and 404 to the rest.
		s.oidcHTTP = s.serveHTTP(s.olis, s.issuer.Handler(), "oidc http server stopped")
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.watchLock(runCtx) // after SERVING, which a loss then overrides
	close(s.ready)
	s.log.Info().Str("grpc", s.lis.Addr().String()).Str("http", s.HTTPAddr()).Str("oidc", s.OIDCAddr()).Bool("tls", !s.cfg.TLS.Insecure).Msg("manager started")
	return nil
}

// serveHTTP serves h on l in the background until Close.
func (s *Server) serveHTTP(l net.Listener, h http.Handler, stopped string) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg(stopped)
		}
	}()
	return srv
}

// sweepEvery is the timer resolution: a tenth of the shortest timer
// (the silence that closes a delegate's stream among them), between 5 ms
// and 250 ms.
func (s *Server) sweepEvery() time.Duration {
	dc := s.cfg.Dispatch
	silence := time.Duration(dc.MissedHeartbeats) * dc.HeartbeatInterval.D()
	d := min(dc.LeaseDuration.D(), dc.QueueTimeout.D(), dc.TaskDeadline.D(), silence) / 10
	return max(5*time.Millisecond, min(d, 250*time.Millisecond))
}

func (s *Server) serverCreds() (credentials.TransportCredentials, error) {
	if s.cfg.TLS.Insecure {
		return insecureCreds(), nil
	}
	cert, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.cfg.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(s.cfg.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.client_ca_file: no PEM certificates in %s", s.cfg.TLS.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.disp.Stopping():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		default:
		}
		if why := s.il.lost.Load(); why != nil {
			http.Error(w, *why, http.StatusServiceUnavailable)
			return
		}
		select {
		case <-s.ready:
			w.Write([]byte("ready\n"))
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.Registry(), promhttp.HandlerOpts{}))
	if s.olis == nil {
		// No oidc.listen: the OIDC documents share this listener.
		mux.Handle("GET /.well-known/", s.issuer.Handler())
	}
	return mux
}

// issuerURL is the OIDC issuer: configured, or the URL of the listener
// serving the OIDC documents (oidc.listen, else http_listen).
func (s *Server) issuerURL() string {
	if s.cfg.OIDC.IssuerURL != "" {
		return strings.TrimSuffix(s.cfg.OIDC.IssuerURL, "/")
	}
	for _, l := range []net.Listener{s.olis, s.hlis} {
		if l != nil {
			return "http://" + l.Addr().String()
		}
	}
	// No HTTP listener: nothing serves discovery; AWS cannot verify tokens.
	s.log.Warn().Msg("http_listen and oidc.listen are empty and oidc.issuer_url unset: the OIDC discovery document is not served")
	return "http://" + s.lis.Addr().String()
}

// OIDCAddr is the address of oidc.listen's listener, or "" when the OIDC
// documents are served on the HTTP listener.
func (s *Server) OIDCAddr() string {
	if s.olis == nil {
		return ""
	}
	return s.olis.Addr().String()
}

// Issuer returns the manager's OIDC issuer.
func (s *Server) Issuer() *oidc.Issuer { return s.issuer }

// Addr is the gRPC listener's address (useful with port 0).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// HTTPAddr is the HTTP listener's address, or "" when disabled.
func (s *Server) HTTPAddr() string {
	if s.hlis == nil {
		return ""
	}
	return s.hlis.Addr().String()
}

// SetPeer makes the server serve n's PeerService (a replica of a
// cluster; n is built on Dispatcher()). Call it before Start.
func (s *Server) SetPeer(n *peer.Node) { s.peer = n }

// Dispatcher returns the server's dispatcher (for in-process callers).
func (s *Server) Dispatcher() *dispatch.Dispatcher { return s.disp }

// Close stops accepting, lets streams and calls finish within
// cfg.ShutdownTimeout (then stops hard), leaves the cluster (a replica),
// closes the store, and then releases the store's manager lock. Async
// tasks stay in the store for the next start (or, in a cluster, for the
// other replicas).
func (s *Server) Close(ctx context.Context) error {
	if s.health != nil {
		s.health.Shutdown()
	}
	s.disp.Close()
	if s.grpc != nil {
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		timer := time.NewTimer(s.cfg.ShutdownTimeout.D())
		select {
		case <-done:
		case <-timer.C:
			s.grpc.Stop()
			<-done
		case <-ctx.Done():
			s.grpc.Stop()
			<-done
		}
		timer.Stop()
		// Every stream has ended: their senders and receivers return.
		s.dsvc.Wait()
	}
	var errs []error
	for _, h := range []*http.Server{s.http, s.oidcHTTP} {
		if h != nil {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := h.Shutdown(sctx); err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
			cancel()
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.platformWait != nil {
		s.platformWait() // the run context ended: its tasks were cut short
	}
	// The dispatcher's store writes stop retrying on close; wait for
	// them, so that none runs on a closed store.
	s.disp.Join()
	// A replica leaves its cluster once its dispatcher gave its queued
	// tasks back, and before the store closes.
	errs = append(errs, s.stopReplica(ctx), s.store.Close())
	return errors.Join(append(errs, s.releaseLock(ctx))...)
}

// StaleResults counts results discarded because their lease was not current.
func (s *Server) StaleResults() int {
	return s.m.StaleResults()
}
