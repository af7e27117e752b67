// Package platform runs the tasks the manager runs itself (OIDC
// connectors in platform connectivity mode, selected by
// dispatch.PlatformTag) with the same tasks code a delegate uses. The
// dispatcher's in-process delegate (dispatch.StartPlatform) hands them to
// a Runner.
package platform

import (
	"context"

	"github.com/rs/zerolog"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
	"github.com/smdelegate/smdelegate/tasks/awsauth"
)

// Runner runs platform tasks in the manager's process.
type Runner struct{ r *tasks.Runner }

// New is the platform's Runner. Its AWS calls are confined: their
// endpoints are AWS's own or those of allow (platform.endpoints.allow),
// since the manager posts the tokens it signs there; env: and file:
// references are never read on the manager (platform tasks are oidc
// connectors, which have none).
func New(allow []string, log zerolog.Logger) (*Runner, error) {
	policy, err := awsauth.NewPolicy(awsauth.PolicyConfig{
		AllowEndpoints: allow,
		Keys:           awsauth.PolicyKeys{Config: "the manager's config", Endpoints: "platform.endpoints.allow"},
	})
	if err != nil {
		return nil, err
	}
	pool := awsauth.NewPool(awsauth.PoolOptions{SessionName: "smd-manager", Policy: policy})
	return &Runner{tasks.NewRunner(tasks.RunnerOptions{Logger: log, Pool: pool})}, nil
}

// Run runs one platform task: a secret task, anything else is refused.
func (p *Runner) Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome {
	st := t.GetPayload().GetSecret()
	if st == nil {
		return &delegatev1.Outcome{Code: delegatev1.Code_INVALID_ARGUMENT, Message: "the platform runs only secret tasks"}
	}
	return p.r.Run(tasks.WithAttempt(ctx, t.GetAttempt()), t.GetId(), st)
}
