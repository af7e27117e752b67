package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/logging"
	"github.com/smdelegate/smdelegate/manager"
)

func newManagerCmd() *cobra.Command {
	var path, listen, httpListen, dataDir, logLevel string
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the manager (gRPC for agents and operators, HTTP for health and metrics)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := manager.LoadConfig(path)
			if err != nil {
				return usageErr(err)
			}
			flags := cmd.Flags()
			if flags.Changed("listen") {
				cfg.Listen = listen
			}
			if flags.Changed("http-listen") {
				cfg.HTTPListen = httpListen
			}
			if flags.Changed("data-dir") {
				cfg.DataDir = dataDir
			}
			if flags.Changed("log-level") {
				cfg.Log.Level = logLevel
			}
			if err := cfg.LoadMasterKey(); err != nil {
				return usageErr(err)
			}
			if err := cfg.LoadPeerToken(); err != nil {
				return usageErr(err)
			}
			if err := cfg.Validate(); err != nil {
				return usageErr(fmt.Errorf("invalid configuration:\n%w", err))
			}
			log, err := logging.New(os.Stderr, cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return usageErr(err)
			}
			srv, err := newManager(cfg, log)
			if err != nil {
				return err
			}
			if err := srv.Start(cmd.Context()); err != nil {
				srv.Close(context.Background())
				return err
			}
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			select {
			case sig := <-sigs:
				log.Info().Str("signal", sig.String()).Msg("shutting down; a second signal exits at once")
			case <-srv.Failed():
				// Exit non-zero, so that a supervisor starts it afresh.
				log.Error().Err(srv.Err()).Msg("shutting down: the manager cannot serve any more")
				return errors.Join(srv.Err(), srv.Close(context.Background()))
			}
			go func() { <-sigs; log.Warn().Msg("second signal: exiting now"); os.Exit(exitInterrupted) }()
			return srv.Close(context.Background())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&path, "config", "c", "", "config file (YAML); see configs/manager.yaml")
	f.StringVar(&listen, "listen", "", "gRPC listen address (listen)")
	f.StringVar(&httpListen, "http-listen", "", "HTTP listen address for /healthz, /readyz, /metrics (http_listen)")
	f.StringVar(&dataDir, "data-dir", "", "data directory for the embedded store (data_dir)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (log.level)")
	return cmd
}

// agentFlags are smd agent's flags: each, when given, wins over the
// config file and the SMD_* environment.
type agentFlags struct {
	path, mgr, name, logLevel string
	tags                      []string
	concurrency               int
}

func (o *agentFlags) register(f *pflag.FlagSet) {
	f.StringVarP(&o.path, "config", "c", "", "config file (YAML); see configs/agent.yaml")
	f.StringVar(&o.mgr, "manager", "", "manager gRPC address host:port, or several comma-separated (manager, SMD_MANAGER)")
	f.StringVar(&o.name, "name", "", "delegate name, default the hostname (name)")
	f.StringSliceVar(&o.tags, "tags", nil, "delegate tags, comma-separated (tags, SMD_TAGS)")
	f.IntVar(&o.concurrency, "concurrency", 0, "tasks run at once (concurrency)")
	f.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (log.level)")
}

// config loads the agent's configuration: defaults, then the file, then
// SMD_* variables, then the flags given; then validates it.
func (o *agentFlags) config(flags *pflag.FlagSet) (agent.Config, error) {
	cfg, err := agent.LoadConfig(o.path)
	if err != nil {
		return cfg, usageErr(err)
	}
	if flags.Changed("manager") {
		cfg.Manager = o.mgr
	}
	if flags.Changed("name") {
		cfg.Name = o.name
	}
	if flags.Changed("tags") {
		cfg.Tags = o.tags
	}
	if flags.Changed("concurrency") {
		cfg.Concurrency = o.concurrency
	}
	if flags.Changed("log-level") {
		cfg.Log.Level = o.logLevel
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageErr(fmt.Errorf("invalid configuration:\n%w", err))
	}
	return cfg, nil
}

func newAgentCmd() *cobra.Command {
	var o agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the delegate: connect to the manager and run the tasks it sends",
		Long: `Run the delegate. It connects out to the manager, announces its tags and
runs the secret tasks whose connector selectors its tags satisfy.

Signals: the first SIGTERM/SIGINT drains (no new tasks, running ones finish,
exit 0); a second cancels running tasks; a third exits at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config(cmd.Flags())
			if err != nil {
				return err
			}
			log, err := logging.New(os.Stderr, cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return usageErr(err)
			}
			base := log.With().Str("delegate", cfg.Name).Logger()
			log = base.With().Str("component", "agent").Logger()
			h, err := newTaskHandler(cfg, base)
			if err != nil {
				return usageErr(fmt.Errorf("invalid configuration:\n%w", err))
			}
			a := agent.New(cfg, log, h, Version)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sigs := make(chan os.Signal, 3)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			go func() {
				n := 0
				for sig := range sigs {
					n++
					switch n {
					case 1:
						log.Info().Str("signal", sig.String()).Msg("draining; a second signal cancels running tasks, a third exits at once")
						a.Drain()
					case 2:
						a.CancelRunning()
						// Give cancelled tasks a moment to report, then stop.
						time.AfterFunc(5*time.Second, cancel)
					default:
						log.Warn().Msg("third signal: exiting now")
						os.Exit(exitInterrupted)
					}
				}
			}()
			err = a.Run(ctx)
			var fe *agent.FatalError
			if errors.As(err, &fe) {
				log.Error().Str("code", fe.Code.String()).Msg(fe.Msg)
				return &codedError{exitDenied, err}
			}
			return err
		},
	}
	o.register(cmd.Flags())
	return cmd
}
