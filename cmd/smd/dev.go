package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/logging"
	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// devOptions are smd dev's flags.
type devOptions struct {
	dataDir    string
	envFile    string
	listen     string
	httpListen string
	awsListen  string
	logLevel   string
}

func newDevCmd() *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a manager, one agent and a local AWS Secrets Manager/STS emulator in one process",
		Long: `Run everything on 127.0.0.1 in one process, for trying smdelegate with no
setup and no AWS account: a manager (plaintext gRPC), one agent named "dev"
with the tag "dev", and internal/awsemu, a local Secrets Manager and STS
endpoint. The embedded store lives in a temporary directory (or --data-dir).
A fresh operator token is made at each start; the banner prints it, and
--env-file writes SMD_MANAGER, SMD_TOKEN and SMD_INSECURE lines for scripts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), cmd.OutOrStdout(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "keep the store here (default: a temporary directory, removed on exit)")
	f.StringVar(&o.envFile, "env-file", "", "write SMD_MANAGER=, SMD_TOKEN= and SMD_INSECURE= lines to this file once ready")
	f.StringVar(&o.listen, "listen", "127.0.0.1:7070", "manager gRPC address")
	f.StringVar(&o.httpListen, "http-listen", "127.0.0.1:7071", "manager HTTP address (health, metrics)")
	f.StringVar(&o.awsListen, "aws-listen", "127.0.0.1:4566", "AWS emulator address")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func randomToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func runDev(parent context.Context, stdout io.Writer, o devOptions) error {
	log, err := logging.New(os.Stderr, o.logLevel, "")
	if err != nil {
		return usageErr(err)
	}
	dataDir := o.dataDir
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "smd-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dataDir)
	}

	emu := awsemu.New(awsemu.Options{})
	awsURL, err := emu.Start(o.awsListen)
	if err != nil {
		return fmt.Errorf("aws emulator: %w (is another smd dev running? use --aws-listen)", err)
	}
	defer emu.Close()
	// The dev agent's default AWS chain points at the emulator.
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_SECRETS_MANAGER": awsURL, "AWS_ENDPOINT_URL_STS": awsURL,
		"AWS_ACCESS_KEY_ID": awsemu.DefaultAccessKeyID, "AWS_SECRET_ACCESS_KEY": awsemu.DefaultSecretAccessKey,
		"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		os.Setenv(k, v)
	}

	key, err := devMasterKey(dataDir)
	if err != nil {
		return err
	}
	opToken, dgToken := randomToken("smdo_"), randomToken("smdd_")
	mcfg := manager.DefaultConfig()
	mcfg.Listen, mcfg.HTTPListen, mcfg.DataDir = o.listen, o.httpListen, dataDir
	mcfg.TLS.Insecure = true
	mcfg.MasterKey = key
	mcfg.Auth.DelegateTokens = []manager.TokenConfig{{Name: "dev", SHA256: manager.HashToken(dgToken)}}
	mcfg.Auth.OperatorTokens = []manager.TokenConfig{{Name: "dev", SHA256: manager.HashToken(opToken)}}
	mcfg.ShutdownTimeout = config.Duration(2 * time.Second)
	// Platform (oidc) connectors of smd dev call the emulator too.
	mcfg.Platform.Endpoints.Allow = []string{awsURL}
	srv, err := newManager(mcfg, log)
	if err != nil {
		return err
	}
	if err := srv.Start(parent); err != nil {
		srv.Close(context.Background())
		return fmt.Errorf("%w (is another smd dev running? use --listen/--http-listen)", err)
	}
	defer srv.Close(context.Background())

	acfg := agent.DefaultConfig()
	acfg.Manager, acfg.Token, acfg.Name, acfg.Tags = srv.Addr(), dgToken, "dev", []string{"dev"}
	acfg.TLS.Insecure = true
	acfg.Reconnect.Initial = config.Duration(100 * time.Millisecond)
	acfg.Reconnect.Max = config.Duration(2 * time.Second)
	// The sample connector's endpoints are the emulator's: the dev agent
	// allows them, as an operator's agent would in endpoints.allow.
	acfg.Endpoints.Allow = []string{awsURL}
	if err := acfg.Validate(); err != nil {
		return err
	}
	abase := log.With().Str("delegate", acfg.Name).Logger()
	h, err := newTaskHandler(acfg, abase)
	if err != nil {
		return err
	}
	ag := agent.New(acfg, abase.With().Str("component", "agent").Logger(), h, Version)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(ctx) }()

	if err := devConnector(parent, srv.Addr(), opToken, awsURL); err != nil {
		return fmt.Errorf("create the sample connector: %w", err)
	}

	env := fmt.Sprintf("SMD_MANAGER=%s\nSMD_TOKEN=%s\nSMD_INSECURE=true\n", srv.Addr(), opToken)
	if o.envFile != "" {
		tmp := o.envFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(env), 0o600); err != nil {
			return fmt.Errorf("--env-file: %w", err)
		}
		if err := os.Rename(tmp, o.envFile); err != nil {
			return fmt.Errorf("--env-file: %w", err)
		}
	}
	fmt.Fprintf(stdout, `
smd dev is running, all on 127.0.0.1 (Ctrl-C stops it)
  manager   %s (gRPC, plaintext)   http://%s/metrics
  delegate  dev (tags: dev)
  aws       %s (local Secrets Manager + STS emulator)
  connector dev_aws (default; access key held as builtin:dev_aws_secret_key; prefix dev)
  store     %s

In another terminal:
  export SMD_MANAGER=%s SMD_TOKEN=%s SMD_INSECURE=true
  smd delegate list
  smd connector test dev_aws
  echo -n 's3cr3t' | smd secret create db-password --wait
  smd secret get db-password
`, srv.Addr(), srv.HTTPAddr(), awsURL, filepath.Join(dataDir, "smd.db"), srv.Addr(), opToken)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case <-sigs:
		log.Info().Msg("stopping")
	case err := <-agentDone:
		return fmt.Errorf("dev agent stopped: %w", err)
	}
	if o.envFile != "" {
		os.Remove(o.envFile)
	}
	cancel()
	<-agentDone
	return nil
}

// devMasterKey reads the dev store's master key, or makes one beside it,
// so a --data-dir survives restarts. It creates dataDir (0700) when it
// does not exist yet, as the manager would for its store.
func devMasterKey(dataDir string) ([]byte, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, "master.key")
	if _, err := os.Stat(path); os.IsNotExist(err) {
		if err := os.WriteFile(path, []byte(seal.GenerateKey()+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	return seal.LoadKey(path, "")
}

// devConnector registers the sample connector (once per data dir) through
// the API, as an operator would.
func devConnector(ctx context.Context, addr, token, awsURL string) error {
	cf := clientFlags{manager: addr, token: token, insecure: true}
	conn, cctx, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	cl := delegatev1.NewManagerServiceClient(conn)
	if _, err := cl.PutCredential(cctx, &delegatev1.PutCredentialRequest{Name: "dev_aws_secret_key", Value: []byte(awsemu.DefaultSecretAccessKey)}); err != nil {
		return err
	}
	c := &delegatev1.Connector{
		Identifier: "dev_aws", Name: "Local AWS emulator", Description: "The sample connector of smd dev",
		CredentialType: delegatev1.CredentialType_ACCESS_KEY, AccessKeyId: awsemu.DefaultAccessKeyID,
		SecretAccessKey: "builtin:dev_aws_secret_key", Region: "us-east-1", SecretNamePrefix: "dev",
		Default: true, DelegateSelectors: []string{"dev"}, EndpointUrl: awsURL, StsEndpointUrl: awsURL,
	}
	if _, err := cl.CreateConnector(cctx, &delegatev1.CreateConnectorRequest{Connector: c}); err != nil {
		if status.Code(err) != codes.AlreadyExists {
			return err
		}
		_, err = cl.UpdateConnector(cctx, &delegatev1.UpdateConnectorRequest{Connector: c})
		return err
	}
	return nil
}
