package awsemu

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// smInput is the union of the Secrets Manager request members the emulator
// reads; pointers tell an absent member from a zero one.
type smInput struct {
	SecretID                   *string  `json:"SecretId"`
	Name                       *string  `json:"Name"`
	ClientRequestToken         *string  `json:"ClientRequestToken"`
	Description                *string  `json:"Description"`
	KmsKeyID                   *string  `json:"KmsKeyId"`
	SecretString               *string  `json:"SecretString"`
	SecretBinary               []byte   `json:"SecretBinary"`
	Tags                       []tag    `json:"Tags"`
	TagKeys                    []string `json:"TagKeys"`
	VersionID                  *string  `json:"VersionId"`
	VersionStage               *string  `json:"VersionStage"`
	VersionStages              []string `json:"VersionStages"`
	RecoveryWindowInDays       *int64   `json:"RecoveryWindowInDays"`
	ForceDeleteWithoutRecovery *bool    `json:"ForceDeleteWithoutRecovery"`
	MaxResults                 *int64   `json:"MaxResults"`
	NextToken                  *string  `json:"NextToken"`
	Filters                    []filter `json:"Filters"`
	IncludePlannedDeletion     *bool    `json:"IncludePlannedDeletion"`
	IncludeDeprecated          *bool    `json:"IncludeDeprecated"`
	SortBy                     *string  `json:"SortBy"`
	SortOrder                  *string  `json:"SortOrder"`
	AddReplicaRegions          []any    `json:"AddReplicaRegions"`
	PasswordLength             *int64   `json:"PasswordLength"`
	ExcludeCharacters          *string  `json:"ExcludeCharacters"`
	ExcludeNumbers             *bool    `json:"ExcludeNumbers"`
	ExcludePunctuation         *bool    `json:"ExcludePunctuation"`
	ExcludeUppercase           *bool    `json:"ExcludeUppercase"`
	ExcludeLowercase           *bool    `json:"ExcludeLowercase"`
	IncludeSpace               *bool    `json:"IncludeSpace"`
	RequireEachIncludedType    *bool    `json:"RequireEachIncludedType"`
}

type filter struct {
	Key    string   `json:"Key"`
	Values []string `json:"Values"`
}

// epoch is a timestamp in the JSON protocol's form: seconds since the epoch.
type epoch time.Time

// MarshalJSON writes fractional epoch seconds, as AWS does.
func (e epoch) MarshalJSON() ([]byte, error) {
	ms := time.Time(e).UnixMilli()
	return []byte(strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)), nil
}

// ep returns t for an omitempty response member: nil when t is zero.
func ep(t time.Time) *epoch {
	if t.IsZero() {
		return nil
	}
	e := epoch(t)
	return &e
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

type smHandler func(s *Server, in *smInput) (any, *apiError)

var smHandlers = map[string]smHandler{
	"CreateSecret":         (*Server).createSecret,
	"GetSecretValue":       (*Server).getSecretValue,
	"PutSecretValue":       (*Server).putSecretValue,
	"UpdateSecret":         (*Server).updateSecret,
	"DescribeSecret":       (*Server).describeSecret,
	"DeleteSecret":         (*Server).deleteSecret,
	"RestoreSecret":        (*Server).restoreSecret,
	"ListSecrets":          (*Server).listSecrets,
	"ListSecretVersionIds": (*Server).listSecretVersionIDs,
	"GetRandomPassword":    (*Server).getRandomPassword,
	"TagResource":          (*Server).tagResource,
	"UntagResource":        (*Server).untagResource,
}

func (s *Server) serveSecretsManager(w http.ResponseWriter, c *call) {
	h, ok := smHandlers[c.action]
	if !ok {
		writeJSONError(w, c.requestID, errf(400, "UnknownOperationException",
			"awsemu does not implement secretsmanager.%s", c.action))
		return
	}
	var in smInput
	if len(bytes.TrimSpace(c.body)) > 0 {
		if err := json.Unmarshal(c.body, &in); err != nil {
			writeJSONError(w, c.requestID, errSerialization("the request body is not valid JSON for "+c.action))
			return
		}
	}
	out, aerr := h(s, &in)
	if aerr != nil {
		writeJSONError(w, c.requestID, aerr)
		return
	}
	writeJSON(w, c.requestID, out)
}

// Error constructors, with the messages Secrets Manager uses.

// Validation of request members, before any state is read.

func versionFor(token string, in *smInput, now time.Time) *version {
	v := &version{id: token, created: now}
	if in.SecretString != nil {
		str := *in.SecretString
		v.str = &str
	}
	if in.SecretBinary != nil {
		v.bin = bytes.Clone(in.SecretBinary)
	}
	return v
}

// Responses.

type arnNameVersion struct {
	ARN           string   `json:"ARN"`
	Name          string   `json:"Name"`
	VersionID     *string  `json:"VersionId,omitempty"`
	VersionStages []string `json:"VersionStages,omitempty"`
}

func (s *Server) createSecret(in *smInput) (any, *apiError) {
	if in.Name == nil {
		return nil, errValidation("1 validation error detected: Value at 'name' failed to satisfy constraint: Member must not be null")
	}
	name := *in.Name
	if e := validateName(name); e != nil {
		return nil, e
	}
	hasValue, e := validateValue(in)
	for _, check := range []*apiError{e, validateToken(in.ClientRequestToken), validateMetadata(in), validateTags(in.Tags)} {
		if check != nil {
			return nil, check
		}
	}
	if len(in.AddReplicaRegions) > 0 {
		return nil, errInvalidRequest("awsemu does not emulate replication to other Regions.")
	}
	token := ""
	if in.ClientRequestToken != nil {
		token = *in.ClientRequestToken
	}
	if hasValue && token == "" {
		return nil, errMissingToken()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked()
	now := s.now()
	if sec, ok := s.secrets[name]; ok {
		if sec.scheduled() {
			return nil, errInvalidRequest("You can't create this secret because a secret with this name is already scheduled for deletion.")
		}
		// The same token with the same value is a retry of a create that
		// succeeded: AWS ignores it (CreateSecret, ClientRequestToken).
		if v := sec.version(token); hasValue && v != nil && v.sameValue(in.SecretString, in.SecretBinary) {
			return arnNameVersion{ARN: sec.arn, Name: sec.name, VersionID: &v.id}, nil
		}
		return nil, errf(400, "ResourceExistsException", "The operation failed because the secret %s already exists.", name)
	}
	sec := s.newSecretLocked(name, now)
	if in.Description != nil {
		sec.description = *in.Description
	}
	if in.KmsKeyID != nil {
		sec.kmsKeyID = *in.KmsKeyID
	}
	sec.setTags(in.Tags)
	out := arnNameVersion{ARN: sec.arn, Name: sec.name}
	if hasValue {
		sec.addVersion(versionFor(token, in, now), nil)
		out.VersionID = &token
	}
	return out, nil
}

type getSecretValueOutput struct {
	ARN           string   `json:"ARN"`
	Name          string   `json:"Name"`
	VersionID     string   `json:"VersionId"`
	SecretString  *string  `json:"SecretString,omitempty"`
	SecretBinary  []byte   `json:"SecretBinary,omitempty"`
	VersionStages []string `json:"VersionStages"`
	CreatedDate   *epoch   `json:"CreatedDate,omitempty"`
}

func (s *Server) getSecretValue(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(*in.SecretID)
	if sec == nil {
		return nil, errNotFound()
	}
	if sec.scheduled() {
		return nil, errMarkedForDeletion()
	}
	var v *version
	if in.VersionID != nil {
		v = sec.version(*in.VersionID)
		if v == nil {
			return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for VersionId: %s", *in.VersionID)
		}
		if in.VersionStage != nil && !slices.Contains(v.stages, *in.VersionStage) {
			return nil, errInvalidRequest("You provided a VersionStage that is not associated to the provided VersionId.")
		}
	} else {
		stage := stageCurrent
		if in.VersionStage != nil {
			stage = *in.VersionStage
		}
		v = sec.versionWithStage(stage)
		if v == nil {
			return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: %s", stage)
		}
	}
	day := s.now().UTC().Truncate(24 * time.Hour)
	sec.lastAccessed, v.lastAccessed = day, day
	return getSecretValueOutput{
		ARN:           sec.arn,
		Name:          sec.name,
		VersionID:     v.id,
		SecretString:  v.str,
		SecretBinary:  v.bin,
		VersionStages: slices.Clone(v.stages),
		CreatedDate:   ep(v.created),
	}, nil
}

func (s *Server) putSecretValue(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	hasValue, e := validateValue(in)
	if e != nil {
		return nil, e
	}
	if e := validateToken(in.ClientRequestToken); e != nil {
		return nil, e
	}
	if !hasValue {
		return nil, errInvalidParameter("You must provide either SecretString or SecretBinary.")
	}
	if in.VersionStages != nil && (len(in.VersionStages) < 1 || len(in.VersionStages) > 20) {
		return nil, errValidation("1 validation error detected: Value at 'versionStages' failed to satisfy constraint: " +
			"Member must have length between 1 and 20")
	}
	for _, st := range in.VersionStages {
		if len(st) < 1 || len(st) > 256 {
			return nil, errValidation("1 validation error detected: Value at 'versionStages.member' failed to satisfy constraint: " +
				"Member must have length between 1 and 256")
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(*in.SecretID)
	if sec == nil {
		return nil, errNotFound()
	}
	if sec.scheduled() {
		return nil, errMarkedForDeletion()
	}
	if in.ClientRequestToken == nil || *in.ClientRequestToken == "" {
		return nil, errMissingToken()
	}
	token := *in.ClientRequestToken
	if v := sec.version(token); v != nil {
		if !v.sameValue(in.SecretString, in.SecretBinary) {
			return nil, errVersionExists()
		}
		return arnNameVersion{ARN: sec.arn, Name: sec.name, VersionID: &v.id, VersionStages: slices.Clone(v.stages)}, nil
	}
	stages := slices.Clone(in.VersionStages)
	if len(sec.versions) == 0 && len(stages) > 0 && !slices.Contains(stages, stageCurrent) {
		// The first version of a secret always becomes AWSCURRENT.
		stages = append(stages, stageCurrent)
	}
	now := s.now()
	v := versionFor(token, in, now)
	sec.addVersion(v, stages)
	sec.lastChanged = now
	return arnNameVersion{ARN: sec.arn, Name: sec.name, VersionID: &v.id, VersionStages: slices.Clone(v.stages)}, nil
}

func (s *Server) updateSecret(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	hasValue, e := validateValue(in)
	for _, check := range []*apiError{e, validateToken(in.ClientRequestToken), validateMetadata(in)} {
		if check != nil {
			return nil, check
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(*in.SecretID)
	if sec == nil {
		return nil, errNotFound()
	}
	if sec.scheduled() {
		return nil, errMarkedForDeletion()
	}
	var newVersion *version
	out := arnNameVersion{ARN: sec.arn, Name: sec.name}
	if hasValue {
		if in.ClientRequestToken == nil || *in.ClientRequestToken == "" {
			return nil, errMissingToken()
		}
		token := *in.ClientRequestToken
		if v := sec.version(token); v != nil {
			if !v.sameValue(in.SecretString, in.SecretBinary) {
				return nil, errVersionExists()
			}
			out.VersionID = &v.id // a retry: no new version
		} else {
			newVersion = versionFor(token, in, s.now())
			out.VersionID = &newVersion.id
		}
	}
	if in.Description != nil {
		sec.description = *in.Description
	}
	if in.KmsKeyID != nil {
		sec.kmsKeyID = *in.KmsKeyID
	}
	if newVersion != nil {
		sec.addVersion(newVersion, nil)
	}
	sec.lastChanged = s.now()
	return out, nil
}

type describeSecretOutput struct {
	ARN                string              `json:"ARN"`
	Name               string              `json:"Name"`
	Description        *string             `json:"Description,omitempty"`
	KmsKeyID           *string             `json:"KmsKeyId,omitempty"`
	CreatedDate        *epoch              `json:"CreatedDate,omitempty"`
	LastChangedDate    *epoch              `json:"LastChangedDate,omitempty"`
	LastAccessedDate   *epoch              `json:"LastAccessedDate,omitempty"`
	DeletedDate        *epoch              `json:"DeletedDate,omitempty"`
	Tags               []tag               `json:"Tags,omitempty"`
	VersionIDsToStages map[string][]string `json:"VersionIdsToStages,omitempty"`
}

func (s *Server) describeSecret(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(*in.SecretID)
	if sec == nil {
		return nil, errNotFound()
	}
	return describeSecretOutput{
		ARN:                sec.arn,
		Name:               sec.name,
		Description:        strp(sec.description),
		KmsKeyID:           strp(sec.kmsKeyID),
		CreatedDate:        ep(sec.created),
		LastChangedDate:    ep(sec.lastChanged),
		LastAccessedDate:   ep(sec.lastAccessed),
		DeletedDate:        ep(sec.deletedAt),
		Tags:               slices.Clone(sec.tags),
		VersionIDsToStages: sec.versionsToStages(),
	}, nil
}
