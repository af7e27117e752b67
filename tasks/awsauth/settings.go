package awsauth

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"regexp"
	"strings"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Assume-role session limits (AWS STS AssumeRole DurationSeconds).
const (
	MinAssumeRoleDuration = 900 * time.Second
	MaxAssumeRoleDuration = 43200 * time.Second
)

// defaultSessionName is used when PoolOptions.SessionName is empty or
// sanitizes to fewer than two characters.
const defaultSessionName = "smdelegate"

// resolved is a connector's settings after validation, with every secret
// reference read on this host. It lives only in memory.
type resolved struct {
	connectorID    string
	credType       delegatev1.CredentialType
	region         string
	endpointURL    string
	stsEndpointURL string
	roleARN        string
	externalID     string
	duration       time.Duration
	// accessKeyID and secretAccessKey are set for ACCESS_KEY only.
	accessKeyID     string
	secretAccessKey string
}

// resolve validates c under this host's policy p and reads its secret
// references. Errors are *FieldError values naming the field; none carries
// a value.
func resolve(c *delegatev1.ConnectorSettings, p *Policy) (*resolved, error) {
	if c == nil {
		return nil, invalidField("credential_type", "connector settings are missing")
	}
	r := &resolved{
		connectorID: c.GetId(),
		credType:    c.GetCredentialType(),
		region:      strings.TrimSpace(c.GetRegion()),
	}
	// The region names the default endpoints' host: anything but a region
	// could steer them to another AWS-hosted name. The manager checks the
	// same rule; this host does not rely on it.
	if r.region != "" && !regionRE.MatchString(r.region) {
		return nil, invalidField("region", "must be an AWS region such as us-east-1 (or empty to use AWS_REGION on the delegate)")
	}
	var err error
	if r.endpointURL, err = p.endpoint("endpoint_url", serviceSecretsManager, c.GetEndpointUrl()); err != nil {
		return nil, err
	}
	if r.stsEndpointURL, err = p.endpoint("sts_endpoint_url", serviceSTS, c.GetStsEndpointUrl()); err != nil {
		return nil, err
	}

	switch r.credType {
	case delegatev1.CredentialType_ACCESS_KEY:
		if r.accessKeyID, err = p.ResolveRef("access_key_id", c.GetAccessKeyId()); err != nil {
			return nil, err
		}
		if r.secretAccessKey, err = p.ResolveRef("secret_access_key", c.GetSecretAccessKey()); err != nil {
			return nil, err
		}
	case delegatev1.CredentialType_INSTANCE_ROLE:
	case delegatev1.CredentialType_ASSUME_ROLE, delegatev1.CredentialType_OIDC:
		r.roleARN = strings.TrimSpace(c.GetRoleArn())
		if r.roleARN == "" {
			return nil, invalidField("role_arn", "is required for credential type %s", r.credType)
		}
		if !strings.HasPrefix(r.roleARN, "arn:") || !strings.Contains(r.roleARN, ":role/") {
			return nil, invalidField("role_arn", "must be an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)")
		}
		if d := c.GetAssumeRoleDurationSeconds(); d != 0 {
			r.duration = time.Duration(d) * time.Second
			if r.duration < MinAssumeRoleDuration || r.duration > MaxAssumeRoleDuration {
				return nil, invalidField("assume_role_duration_seconds", "must be between 900 and 43200 seconds")
			}
		}
		if r.credType == delegatev1.CredentialType_ASSUME_ROLE {
			r.externalID = c.GetExternalId()
			if n := len(r.externalID); n == 1 || n > 1224 {
				return nil, invalidField("external_id", "must be 2-1224 characters")
			}
		}
	default:
		return nil, invalidField("credential_type", "must be one of ACCESS_KEY, INSTANCE_ROLE, ASSUME_ROLE, OIDC")
	}
	return r, nil
}

// cacheKey identifies everything that decides which identity a client signs
// as and which endpoints it talks to. The per-task OIDC token is not part of
// it: the cached credentials outlive any single token. Resolved secret
// material enters only through a hash, so a rotated key file yields a new
// client while the key itself is never kept in the pool's index.
func (r *resolved) cacheKey(sessionName string) string {
	h := sha256.New()
	for _, s := range []string{
		r.connectorID, r.credType.String(), r.region, r.endpointURL, r.stsEndpointURL,
		r.roleARN, r.externalID, sessionName, r.accessKeyID, r.secretAccessKey,
	} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var d [8]byte
	binary.BigEndian.PutUint64(d[:], uint64(r.duration))
	h.Write(d[:])
	return hex.EncodeToString(h.Sum(nil))
}

var sessionNameRe = regexp.MustCompile(`[^\w+=,.@-]`)

// SessionName turns a delegate name into a valid STS RoleSessionName:
// characters outside [\w+=,.@-] become '-', the result is cut to 64
// characters, and a result shorter than two characters becomes "smdelegate".
func SessionName(name string) string {
	s := sessionNameRe.ReplaceAllString(strings.TrimSpace(name), "-")
	if len(s) > 64 {
		s = s[:64]
	}
	if len(s) < 2 {
		return defaultSessionName
	}
	return s
}
