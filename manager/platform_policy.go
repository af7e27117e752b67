package manager

import (
	"github.com/smdelegate/smdelegate/manager/dispatch"
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
