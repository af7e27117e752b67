package main

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/platform"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
	"github.com/smdelegate/smdelegate/tasks/awsauth"
)

// newTaskHandler wires the agent's task handlers: pings, and secret tasks
// on a pool of AWS clients sized by the agent's aws.* settings and
// confined by its references.* and endpoints.* allow-lists (agentPolicy).
// log has no component field: the tasks package names its own.
func newTaskHandler(cfg agent.Config, log zerolog.Logger) (agent.Handler, error) {
	policy, err := agentPolicy(cfg)
	if err != nil {
		return nil, err
	}
	pool := awsauth.NewPool(awsauth.PoolOptions{
		MaxClients:  cfg.AWS.ClientPoolSize,
		TTL:         cfg.AWS.ClientTTL.D(),
		SessionName: cfg.Name,
		RetryMode:   cfg.AWS.RetryMode,
		MaxAttempts: cfg.AWS.MaxAttempts,
		Policy:      policy,
	})
	r := tasks.NewRunner(tasks.RunnerOptions{Logger: log, Pool: pool})
	return &agent.TaskHandler{Name: cfg.Name, Version: Version, Secrets: secretRunner{r}}, nil
}

// agentPolicy is what the agent's config lets connectors reach on this
// host: the env: and file: references of references.allow_env and
// references.allow_files, the endpoints of endpoints.allow beside AWS's
// own. The agent's token file, config file and TLS key are never read,
// and no reference may resolve to (or contain) the agent's token.
func agentPolicy(cfg agent.Config) (*awsauth.Policy, error) {
	return awsauth.NewPolicy(awsauth.PolicyConfig{
		AllowEnv:       cfg.References.AllowEnv,
		AllowFiles:     cfg.References.AllowFiles,
		AllowEndpoints: cfg.Endpoints.Allow,
		ProtectedFiles: []string{cfg.TokenFile, cfg.ConfigFile, cfg.TLS.KeyFile},
		Withheld:       []string{cfg.Token},
		Keys:           awsauth.AgentKeys,
	})
}

// secretRunner adapts tasks.Runner to the agent: the task id seeds the
// ClientRequestToken and the attempt decides retry semantics of deletes.
type secretRunner struct{ r *tasks.Runner }

func (s secretRunner) Run(ctx context.Context, t *delegatev1.Task, st *delegatev1.SecretTask) *delegatev1.Outcome {
	return s.r.Run(tasks.WithAttempt(ctx, t.GetAttempt()), t.GetId(), st)
}

// newManager builds the manager of cfg with its platform runner: the tasks
// the manager runs itself (oidc connectors with oidc_connectivity:
// platform) run the delegate's task code, confined to AWS's endpoints and
// platform.endpoints.allow.
func newManager(cfg manager.Config, log zerolog.Logger) (*manager.Server, error) {
	runner, err := platform.New(cfg.Platform.Endpoints.Allow, log)
	if err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	srv, err := manager.New(cfg, log, nil)
	if err != nil {
		return nil, err
	}
	srv.SetPlatform(runner)
	return srv, nil
}
