// Package connector holds the manager's domain logic for AWS Secrets
// Manager connectors: normalising and validating what an operator submits,
// parsing secret references, building the settings a delegate receives with
// a task, and resolving scopes (project → org → account).
//
// Validation errors are *config.FieldError values whose Field is the
// connector's YAML/proto field name and whose Rule reads as advice to an
// operator. No error from this package ever carries a credential value:
// plaintext keys, secret access keys and builtin credential values are never
// formatted into a message.
package connector

import (
	"slices"
	"strings"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// Limits of a connector's fields.
const (
	MaxIdentifierLen       = 128
	MaxNameLen             = 128
	MaxDescriptionLen      = 1024
	MaxTags                = 50
	MaxTagKeyLen           = 128
	MaxTagValueLen         = 256
	MaxSelectors           = 50
	MaxSelectorLen         = 128
	MaxSecretNamePrefixLen = 256
	MaxKMSKeyIDLen         = tasks.MaxKMSKeyIDLen
	MinAssumeRoleSeconds   = 900
	MaxAssumeRoleSeconds   = 43200
	MinExternalIDLen       = 2
	MaxExternalIDLen       = 1224
	MinRecoveryWindowDays  = tasks.MinRecoveryDays
	MaxRecoveryWindowDays  = tasks.MaxRecoveryDays
)

// ReservedSelectorPrefix starts the tags smdelegate assigns itself (such as
// the manager's own "smd:platform"); operators may not select on them.
const ReservedSelectorPrefix = "smd:"

// Normalize puts c into the form it is validated, stored and compared in.
// It trims every string field, tag keys and values and the scope; trims,
// lower-cases, de-duplicates and sorts delegate selectors, dropping empty
// ones; trims slashes at both ends of secret_name_prefix (the same rule as
// tasks.NewPrefix); and sets oidc_connectivity to DELEGATE for an OIDC
// connector that leaves it unspecified. A nil c is left alone.
//
// Tag keys that become equal after trimming collapse into one; the value of
// the key that sorts last before trimming wins, so the result is
// deterministic.
func Normalize(c *delegatev1.Connector) {
	if c == nil {
		return
	}
	c.Identifier = strings.TrimSpace(c.Identifier)
	c.Name = strings.TrimSpace(c.Name)
	c.Description = strings.TrimSpace(c.Description)
	if len(c.Tags) > 0 {
		keys := make([]string, 0, len(c.Tags))
		for k := range c.Tags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		tags := make(map[string]string, len(keys))
		for _, k := range keys {
			tags[strings.TrimSpace(k)] = strings.TrimSpace(c.Tags[k])
		}
		c.Tags = tags
	}
	if s := c.Scope; s != nil {
		s.Account = strings.TrimSpace(s.Account)
		s.Org = strings.TrimSpace(s.Org)
		s.Project = strings.TrimSpace(s.Project)
	}
	c.AccessKeyId = strings.TrimSpace(c.AccessKeyId)
	c.SecretAccessKey = strings.TrimSpace(c.SecretAccessKey)
	c.RoleArn = strings.TrimSpace(c.RoleArn)
	c.ExternalId = strings.TrimSpace(c.ExternalId)
	c.Region = strings.TrimSpace(c.Region)
	c.SecretNamePrefix = string(tasks.NewPrefix(c.SecretNamePrefix))
	c.DelegateSelectors = normalizeSelectors(c.DelegateSelectors)
	c.EndpointUrl = strings.TrimSpace(c.EndpointUrl)
	c.StsEndpointUrl = strings.TrimSpace(c.StsEndpointUrl)
	c.KmsKeyId = strings.TrimSpace(c.KmsKeyId)
	c.ManagedByTagKey = strings.TrimSpace(c.ManagedByTagKey)
	if c.CredentialType == delegatev1.CredentialType_OIDC &&
		c.OidcConnectivity == delegatev1.OIDCConnectivity_OIDC_CONNECTIVITY_UNSPECIFIED {
		c.OidcConnectivity = delegatev1.OIDCConnectivity_DELEGATE
	}
}

// normalizeSelectors trims and lower-cases selectors, drops empty ones and
// returns them sorted and unique (the form the dispatcher compares tags in).
// It returns nil for no selectors.
func normalizeSelectors(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
