package awsemu

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	defaultSessionDuration = time.Hour
	minSessionDuration     = 15 * time.Minute
	maxSessionDuration     = 12 * time.Hour
	// chainedSessionLimit caps a role session assumed with role-session
	// credentials (role chaining).
	chainedSessionLimit = time.Hour
	stsTimeFormat       = "2006-01-02T15:04:05Z"
)

var (
	roleSessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE      = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

func (s *Server) serveSTS(w http.ResponseWriter, c *call) {
	var (
		out any
		err *apiError
	)
	if v := c.form.Get("Version"); v != "2011-06-15" {
		writeXMLError(w, c.requestID, errf(400, "InvalidAction", "Could not find operation %s for version %s", c.action, v))
		return
	}
	switch c.action {
	case "AssumeRole":
		out, err = s.assumeRole(c)
	case "AssumeRoleWithWebIdentity":
		out, err = s.assumeRoleWithWebIdentity(c)
	case "GetCallerIdentity":
		out = getCallerIdentityResponse{
			Result: callerIdentity{
				Arn:     c.principal.arn,
				UserID:  c.principal.userID,
				Account: s.accountID,
			},
			Metadata: responseMetadata{RequestID: c.requestID},
		}
	case "":
		err = errf(400, "MissingAction", "Missing Action")
	default:
		err = errf(400, "InvalidAction", "awsemu does not implement sts.%s", c.action)
	}
	if err != nil {
		writeXMLError(w, c.requestID, err)
		return
	}
	writeXML(w, c.requestID, http.StatusOK, out)
}

func errSTSValidation(format string, args ...any) *apiError {
	return errf(400, "ValidationError", format, args...)
}

// XML replies, in the shape STS sends them.

type getCallerIdentityResponse struct {
	XMLName  xml.Name         `xml:"https://sts.amazonaws.com/doc/2011-06-15/ GetCallerIdentityResponse"`
	Result   callerIdentity   `xml:"GetCallerIdentityResult"`
	Metadata responseMetadata `xml:"ResponseMetadata"`
}

type callerIdentity struct {
	Arn     string `xml:"Arn"`
	UserID  string `xml:"UserId"`
	Account string `xml:"Account"`
}

type assumeRoleResponse struct {
	XMLName  xml.Name         `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse"`
	Result   assumeRoleResult `xml:"AssumeRoleResult"`
	Metadata responseMetadata `xml:"ResponseMetadata"`
}

type assumeRoleResult struct {
	AssumedRoleUser assumedRoleUser `xml:"AssumedRoleUser"`
	Credentials     stsCredentials  `xml:"Credentials"`
}

type assumedRoleUser struct {
	Arn           string `xml:"Arn"`
	AssumedRoleID string `xml:"AssumedRoleId"`
}

type stsCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

// sessionDuration parses DurationSeconds against the role's maximum.
func sessionDuration(form map[string][]string, role Role, chained bool) (time.Duration, *apiError) {
	d := defaultSessionDuration
	if v := first(form, "DurationSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errSTSValidation("1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must be a number", v)
		}
		d = time.Duration(n) * time.Second
		switch {
		case d < minSessionDuration:
			return 0, errSTSValidation("1 validation error detected: Value '%d' at 'durationSeconds' failed to satisfy constraint: "+
				"Member must have value greater than or equal to 900", n)
		case d > maxSessionDuration:
			return 0, errSTSValidation("1 validation error detected: Value '%d' at 'durationSeconds' failed to satisfy constraint: "+
				"Member must have value less than or equal to 43200", n)
		case chained && d > chainedSessionLimit:
			return 0, errSTSValidation("The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
		}
	}
	limit := role.MaxSessionDuration
	if limit <= 0 {
		limit = defaultSessionDuration
	}
	if d > limit {
		return 0, errSTSValidation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	return d, nil
}

func first(form map[string][]string, key string) string {
	if v := form[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func validateSessionName(name string) *apiError {
	if name == "" {
		return errSTSValidation("1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null")
	}
	if !roleSessionNameRE.MatchString(name) {
		return errSTSValidation("1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: "+
			"Member must satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 and 64", name)
	}
	return nil
}

func (s *Server) assumeRole(c *call) (any, *apiError) {
	roleARN := c.form.Get("RoleArn")
	session := c.form.Get("RoleSessionName")
	if len(roleARN) < 20 || len(roleARN) > 2048 {
		return nil, errSTSValidation("1 validation error detected: Value '%s' at 'roleArn' failed to satisfy constraint: "+
			"Member must have length between 20 and 2048", roleARN)
	}
	if e := validateSessionName(session); e != nil {
		return nil, e
	}
	externalID, hasExternalID := c.form["ExternalId"]
	if hasExternalID && (len(externalID[0]) < 2 || len(externalID[0]) > 1224 || !externalIDRE.MatchString(externalID[0])) {
		return nil, errSTSValidation("1 validation error detected: Value at 'externalId' failed to satisfy constraint: " +
			"Member must satisfy regular expression pattern: [\\w+=,.@:\\/-]* and have length between 2 and 1224")
	}
	role, ok := s.roles[roleARN]
	denied := errf(403, "AccessDenied", "User: %s is not authorized to perform: sts:AssumeRole on resource: %s", c.principal.arn, roleARN)
	if !ok {
		return nil, denied
	}
	if role.ExternalID != "" && (!hasExternalID || externalID[0] != role.ExternalID) {
		return nil, denied
	}
	d, e := sessionDuration(c.form, role, c.principal.roleSession)
	if e != nil {
		return nil, e
	}
	user, creds := s.issueRoleSession(roleARN, session, d)
	return assumeRoleResponse{
		Result:   assumeRoleResult{AssumedRoleUser: user, Credentials: creds},
		Metadata: responseMetadata{RequestID: c.requestID},
	}, nil
}

// SessionCredentials are temporary credentials the emulator's STS issued.
type SessionCredentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expires         time.Time
}

// IssuedSessions returns the temporary credentials AssumeRole and
// AssumeRoleWithWebIdentity have issued since New, secret halves included,
// ordered by access key id. Tests plant them as material no log line or
// message may hold; nothing else should need them.
func (s *Server) IssuedSessions() []SessionCredentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SessionCredentials
	for id, c := range s.creds {
		if c.sessionToken == "" {
			continue
		}
		out = append(out, SessionCredentials{AccessKeyID: id, SecretAccessKey: c.secret, SessionToken: c.sessionToken, Expires: c.expires})
	}
	slices.SortFunc(out, func(a, b SessionCredentials) int { return strings.Compare(a.AccessKeyID, b.AccessKeyID) })
	return out
}

// issueRoleSession creates temporary credentials for a session of roleARN,
// valid for d from Options.Now.
func (s *Server) issueRoleSession(roleARN, session string, d time.Duration) (assumedRoleUser, stsCredentials) {
	roleName := roleARN[strings.LastIndex(roleARN, "/")+1:]
	p := principal{
		accessKeyID: "ASIA" + randomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
		arn:         "arn:aws:sts::" + s.accountID + ":assumed-role/" + roleName + "/" + session,
		userID:      uniqueID("AROA", roleARN) + ":" + session,
		roleSession: true,
	}
	secretKey := randomString(40, alphanumeric+"+/")
	token := "FwoGZXIvYXdzEMU//" + base64.StdEncoding.EncodeToString([]byte(randomString(120, alphanumeric)))
	expires := s.now().Add(d).Truncate(time.Second)

	s.mu.Lock()
	s.creds[p.accessKeyID] = &credential{secret: secretKey, sessionToken: token, expires: expires, principal: p}
	s.mu.Unlock()

	return assumedRoleUser{Arn: p.arn, AssumedRoleID: p.userID}, stsCredentials{
		AccessKeyID:     p.accessKeyID,
		SecretAccessKey: secretKey,
		SessionToken:    token,
		Expiration:      expires.UTC().Format(stsTimeFormat),
	}
}
