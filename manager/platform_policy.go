package manager

import (
	"context"

	"github.com/smdelegate/smdelegate/manager/dispatch"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
	"github.com/smdelegate/smdelegate/tasks/awsauth"
)

// platformPolicy confines the tasks the manager runs itself: their
// endpoints are AWS's own or those of platform.endpoints.allow, since the
// manager posts the tokens it signs there; env: and file: references are
// never read on the manager (platform tasks are oidc connectors, which
// have none).
func platformPolicy(c PlatformConfig) (*awsauth.Policy, error) {
	return awsauth.NewPolicy(awsauth.PolicyConfig{
		AllowEndpoints: c.Endpoints.Allow,
		Keys:           awsauth.PolicyKeys{Config: "the manager's config", Endpoints: "platform.endpoints.allow"},
	})
}

// PlatformTag is the selector of tasks the manager runs itself
// (dispatch.PlatformTag).
const PlatformTag = dispatch.PlatformTag

// platformRunner runs platform tasks in the manager with the same tasks
// code a delegate uses.
type platformRunner struct{ r *tasks.Runner }

func (p platformRunner) Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome {
	st := t.GetPayload().GetSecret()
	if st == nil {
		return &delegatev1.Outcome{Code: delegatev1.Code_INVALID_ARGUMENT, Message: "the platform runs only secret tasks"}
	}
	return p.r.Run(tasks.WithAttempt(ctx, t.GetAttempt()), t.GetId(), st)
}
