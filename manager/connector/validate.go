package connector

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Rules as they appear in errors (each after "field: ").
const (
	ruleIdentifier  = "must start with a letter or _ and contain only letters, digits and _ (at most 128 characters)"
	ruleCredType    = "must be access_key, instance_role, assume_role or oidc"
	ruleRoleARN     = "must be an IAM role ARN such as arn:aws:iam::123456789012:role/NAME"
	ruleExternalID  = "must be 2-1224 characters of letters, digits and _+=,.@:/-"
	ruleDuration    = "must be between 900 and 43200 seconds (or 0 for AWS's default, 3600)"
	ruleRegion      = "must be an AWS region such as us-east-1 (or empty to use AWS_REGION on the delegate)"
	rulePrefix      = "must be at most 256 characters of letters, digits and /_+=.@-"
	ruleRecovery    = "must be between 7 and 30 (or 0 for the default, 30)"
	ruleURL         = "must be an absolute http or https URL"
	ruleAccessKeyID = "a plaintext access key id must be at most 128 letters and digits"
	rulePlainSecret = "a plaintext value is not allowed; store it with smd credential put and use builtin:NAME (or env:VAR, file:/absolute/path)"
	ruleOnlyKeys    = "only used with access_key credentials"
	ruleOnlyRole    = "only used with assume_role or oidc credentials"
	ruleOnlyAssume  = "only used with assume_role credentials"
	ruleOnlyOIDC    = "only used with oidc credentials"
	ruleManagedBy   = "must be 1-127 letters, digits, spaces and _.:/=+-@, not starting with aws: (empty: managed-by)"
)

var (
	identifierRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	roleARNRE    = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)
	// Go's regexp caps repeat counts at 1000: the length is checked apart.
	externalIDRE = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
	regionRE     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	prefixRE     = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]{0,256}$`)
	accessKeyRE  = regexp.MustCompile(`^[A-Za-z0-9]{1,128}$`)
	// managedByRE: the characters AWS allows in tag keys generally (and
	// IAM's secretsmanager:ResourceTag/KEY conditions), at most 127.
	managedByRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,127}$`)
)

// ValidIdentifier reports whether s follows the identifier rule: a letter
// or _, then letters, digits and _, at most 128 characters in all. Scope
// parts (account, org, project) follow it too.
func ValidIdentifier(s string) bool { return identifierRE.MatchString(s) }

// Validate checks c against every connector rule and returns all problems
// joined with errors.Join, or nil. Each problem is a *config.FieldError
// naming the YAML/proto field (identifier, scope.org, delegate_selectors[2],
// tags["team"], ...) and the rule; use errors.As on the joined error's
// Unwrap() []error to list them. Validate expects c to have been through
// Normalize: it does not trim, so " x" is an invalid identifier.
//
// Type-specific checks are skipped while credential_type is missing or
// unknown: that one problem is reported instead of a field-by-field
// consequence of it.
func Validate(c *delegatev1.Connector) error {
	if c == nil {
		return config.Errf("connector", "is required")
	}
	var v validator
	v.identifier("identifier", c.GetIdentifier(), true)
	v.name(c.GetName())
	if utf8.RuneCountInString(c.GetDescription()) > MaxDescriptionLen {
		v.add("description", "must be at most %d characters", MaxDescriptionLen)
	}
	v.tags(c.GetTags())
	v.scope(c.GetScope())
	v.credentials(c)
	if r := c.GetRegion(); r != "" && !regionRE.MatchString(r) {
		v.add("region", ruleRegion)
	}
	if !prefixRE.MatchString(c.GetSecretNamePrefix()) {
		v.add("secret_name_prefix", rulePrefix)
	}
	if d := c.GetRecoveryWindowDays(); d != 0 {
		if d < MinRecoveryWindowDays || d > MaxRecoveryWindowDays {
			v.add("recovery_window_days", ruleRecovery)
		}
		if c.GetForceDeleteWithoutRecovery() {
			v.add("force_delete_without_recovery", "cannot be combined with recovery_window_days")
		}
	}
	v.selectors(c)
	v.url("endpoint_url", c.GetEndpointUrl())
	v.url("sts_endpoint_url", c.GetStsEndpointUrl())
	if len(c.GetKmsKeyId()) > MaxKMSKeyIDLen {
		v.add("kms_key_id", "must be at most %d characters", MaxKMSKeyIDLen)
	}
	if k := c.GetManagedByTagKey(); k != "" && (!managedByRE.MatchString(k) || strings.HasPrefix(strings.ToLower(k), "aws:")) {
		v.add("managed_by_tag_key", ruleManagedBy)
	}
	return errors.Join(v.errs...)
}

// validator collects field errors in the order they are found.
type validator struct{ errs []error }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, config.Errf(field, format, args...))
}

func (v *validator) identifier(field, s string, required bool) {
	switch {
	case s == "":
		if required {
			v.add(field, "is required")
		}
	case !identifierRE.MatchString(s):
		v.add(field, ruleIdentifier)
	}
}

func (v *validator) name(s string) {
	switch {
	case strings.TrimSpace(s) == "":
		v.add("name", "is required")
	case utf8.RuneCountInString(s) > MaxNameLen:
		v.add("name", "must be at most %d characters", MaxNameLen)
	}
}

// tags checks tags in key order, so messages come out the same every time.
// Keys are not secret and are named in the field; values never are.
func (v *validator) tags(tags map[string]string) {
	if len(tags) > MaxTags {
		v.add("tags", "must have at most %d tags", MaxTags)
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field := fmt.Sprintf("tags[%q]", shorten(k, MaxTagKeyLen))
		switch n := utf8.RuneCountInString(k); {
		case strings.TrimSpace(k) == "":
			v.add(field, "key must not be empty")
		case n > MaxTagKeyLen:
			v.add(field, "key must be at most %d characters", MaxTagKeyLen)
		}
		if utf8.RuneCountInString(tags[k]) > MaxTagValueLen {
			v.add(field, "value must be at most %d characters", MaxTagValueLen)
		}
	}
}

// shorten cuts s to n runes, marking the cut, so a huge key cannot flood
// a message.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "..."
}

func (v *validator) scope(s *delegatev1.Scope) {
	v.identifier("scope.account", s.GetAccount(), true)
	if s.GetOrg() == "" && s.GetProject() != "" {
		v.add("scope.org", "is required when scope.project is set")
	}
	v.identifier("scope.org", s.GetOrg(), false)
	v.identifier("scope.project", s.GetProject(), false)
}

// credentials checks credential_type and the fields that depend on it.
func (v *validator) credentials(c *delegatev1.Connector) {
	t := c.GetCredentialType()
	switch t {
	case delegatev1.CredentialType_CREDENTIAL_TYPE_UNSPECIFIED:
		v.add("credential_type", "is required: access_key, instance_role, assume_role or oidc")
		return
	case delegatev1.CredentialType_ACCESS_KEY, delegatev1.CredentialType_INSTANCE_ROLE,
		delegatev1.CredentialType_ASSUME_ROLE, delegatev1.CredentialType_OIDC:
	default:
		v.add("credential_type", ruleCredType)
		return
	}
	keys := t == delegatev1.CredentialType_ACCESS_KEY
	role := t == delegatev1.CredentialType_ASSUME_ROLE || t == delegatev1.CredentialType_OIDC
	oidc := t == delegatev1.CredentialType_OIDC

	if keys {
		v.accessKeyID(c.GetAccessKeyId())
		v.secretAccessKey(c.GetSecretAccessKey())
	} else {
		v.unused("access_key_id", c.GetAccessKeyId() != "", ruleOnlyKeys)
		v.unused("secret_access_key", c.GetSecretAccessKey() != "", ruleOnlyKeys)
	}

	if role {
		switch arn := c.GetRoleArn(); {
		case arn == "":
			v.add("role_arn", "is required for assume_role and oidc credentials")
		case !roleARNRE.MatchString(arn):
			v.add("role_arn", ruleRoleARN)
		}
		if d := c.GetAssumeRoleDurationSeconds(); d != 0 && (d < MinAssumeRoleSeconds || d > MaxAssumeRoleSeconds) {
			v.add("assume_role_duration_seconds", ruleDuration)
		}
	} else {
		v.unused("role_arn", c.GetRoleArn() != "", ruleOnlyRole)
		v.unused("assume_role_duration_seconds", c.GetAssumeRoleDurationSeconds() != 0, ruleOnlyRole)
	}

	if t == delegatev1.CredentialType_ASSUME_ROLE {
		if id := c.GetExternalId(); id != "" && (len(id) < MinExternalIDLen || len(id) > MaxExternalIDLen || !externalIDRE.MatchString(id)) {
			v.add("external_id", ruleExternalID)
		}
	} else {
		v.unused("external_id", c.GetExternalId() != "", ruleOnlyAssume)
	}

	switch mode := c.GetOidcConnectivity(); {
	case !oidc:
		v.unused("oidc_connectivity", mode != delegatev1.OIDCConnectivity_OIDC_CONNECTIVITY_UNSPECIFIED, ruleOnlyOIDC)
	case mode != delegatev1.OIDCConnectivity_OIDC_CONNECTIVITY_UNSPECIFIED &&
		mode != delegatev1.OIDCConnectivity_DELEGATE && mode != delegatev1.OIDCConnectivity_PLATFORM:
		v.add("oidc_connectivity", "must be delegate or platform")
	}
}

func (v *validator) unused(field string, set bool, rule string) {
	if set {
		v.add(field, "%s", rule)
	}
}

// accessKeyID accepts plaintext or a reference. It never formats s.
func (v *validator) accessKeyID(s string) {
	if s == "" {
		v.add("access_key_id", "is required for access_key credentials (plaintext, builtin:NAME, env:VAR or file:/absolute/path)")
		return
	}
	r, err := ParseRef(s)
	switch {
	case err != nil:
		v.add("access_key_id", "%s", err.Error())
	case r.Kind == KindPlain && !accessKeyRE.MatchString(r.Value):
		v.add("access_key_id", ruleAccessKeyID)
	}
}

// secretAccessKey accepts a reference only. It never formats s.
func (v *validator) secretAccessKey(s string) {
	if s == "" {
		v.add("secret_access_key", "is required for access_key credentials (builtin:NAME, env:VAR or file:/absolute/path)")
		return
	}
	r, err := ParseRef(s)
	switch {
	case err != nil:
		v.add("secret_access_key", "%s", err.Error())
	case r.Kind == KindPlain:
		v.add("secret_access_key", rulePlainSecret)
	}
}

// selectors checks delegate_selectors as given (before Normalize drops
// empty ones, an empty one is reported by its index).
func (v *validator) selectors(c *delegatev1.Connector) {
	sels := c.GetDelegateSelectors()
	if len(sels) > MaxSelectors {
		v.add("delegate_selectors", "must have at most %d selectors", MaxSelectors)
	}
	if len(sels) > 0 && c.GetCredentialType() == delegatev1.CredentialType_OIDC &&
		c.GetOidcConnectivity() == delegatev1.OIDCConnectivity_PLATFORM {
		v.add("delegate_selectors", "are not used when oidc_connectivity is platform (the manager runs the tasks itself)")
	}
	for i, s := range sels {
		field := fmt.Sprintf("delegate_selectors[%d]", i)
		if p := TagProblem(s); p != "" {
			v.add(field, "%s", p)
		} else if utf8.RuneCountInString(strings.TrimSpace(s)) > MaxSelectorLen {
			v.add(field, "must be at most %d characters", MaxSelectorLen)
		}
	}
}

// url accepts an empty value or an absolute http(s) URL with a host. The
// value is never formatted: it could carry user:password.
func (v *validator) url(field, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(field, ruleURL)
		return
	}
	if u.User != nil {
		v.add(field, "must not carry credentials (user:password@)")
	}
}
