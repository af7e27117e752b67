package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// clientFlags are shared by every command that talks to the manager.
type clientFlags struct {
	manager  string
	token    string
	output   string
	insecure bool
	caFile   string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&c.manager, "manager", "", "manager gRPC address (env SMD_MANAGER; default 127.0.0.1:7070)")
	f.StringVar(&c.token, "token", "", "operator token (env SMD_TOKEN)")
	f.StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	f.BoolVar(&c.insecure, "insecure", false, "connect in plaintext (env SMD_INSECURE)")
	f.StringVar(&c.caFile, "ca-file", "", "CA certificate to verify the manager (env SMD_CA_FILE)")
}

// resolve fills unset flags from the environment and checks them.
func (c *clientFlags) resolve(cmd *cobra.Command) error {
	flags := cmd.Flags()
	if !flags.Changed("manager") {
		c.manager = envOr("SMD_MANAGER", "127.0.0.1:7070")
	}
	if !flags.Changed("token") {
		c.token = os.Getenv("SMD_TOKEN")
	}
	if !flags.Changed("insecure") {
		if v, ok := os.LookupEnv("SMD_INSECURE"); ok {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return usageErr(fmt.Errorf("SMD_INSECURE: %q is not a boolean", v))
			}
			c.insecure = b
		}
	}
	if !flags.Changed("ca-file") {
		c.caFile = os.Getenv("SMD_CA_FILE")
	}
	switch c.output {
	case "table", "json":
	default:
		return usageErr(fmt.Errorf("--output: must be table or json (got %q)", c.output))
	}
	if c.token == "" {
		return usageErr(fmt.Errorf("--token: an operator token is required (or set SMD_TOKEN)"))
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// dial connects to the manager and returns a context carrying the token.
func (c *clientFlags) dial(ctx context.Context) (*grpc.ClientConn, context.Context, error) {
	var creds credentials.TransportCredentials
	if c.insecure {
		creds = insecure.NewCredentials()
	} else {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.caFile != "" {
			pem, err := os.ReadFile(c.caFile)
			if err != nil {
				return nil, nil, usageErr(fmt.Errorf("--ca-file: %w", err))
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, usageErr(fmt.Errorf("--ca-file: no PEM certificates in %s", c.caFile))
			}
			tc.RootCAs = pool
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(c.manager, grpc.WithTransportCredentials(creds),
		// Reconnect within a few seconds of the manager coming back, so
		// that a submission retried under its request id (submit) gets
		// through inside the retry window; gRPC's default waits up to 2m.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 20 * time.Second,
		}))
	if err != nil {
		return nil, nil, usageErr(fmt.Errorf("--manager: %w", err))
	}
	return conn, metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token), nil
}

// managerClient resolves flags and returns an API client.
func (c *clientFlags) managerClient(cmd *cobra.Command) (delegatev1.ManagerServiceClient, context.Context, func(), error) {
	if err := c.resolve(cmd); err != nil {
		return nil, nil, nil, err
	}
	conn, ctx, err := c.dial(cmd.Context())
	if err != nil {
		return nil, nil, nil, err
	}
	return delegatev1.NewManagerServiceClient(conn), ctx, func() { conn.Close() }, nil
}
