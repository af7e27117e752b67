package awsemu

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"time"
)

const (
	stageCurrent  = "AWSCURRENT"
	stagePrevious = "AWSPREVIOUS"

	// maxDeprecatedVersions is how many versions without a staging label a
	// secret keeps; AWS prunes deprecated versions beyond about 100.
	maxDeprecatedVersions = 100
)

// SecretState is a snapshot of one secret, for tests to inspect.
type SecretState struct {
	Name        string
	ARN         string
	Description string
	KmsKeyID    string // "" when the secret uses the default aws/secretsmanager key
	Tags        map[string]string
	CreatedDate time.Time
	// LastChangedDate is the last time the secret's value or metadata changed.
	LastChangedDate time.Time
	// DeletedDate is when DeleteSecret scheduled the secret for deletion; zero
	// when it is not scheduled.
	DeletedDate time.Time
	// DeletionDate is when a scheduled secret is removed for good; zero when
	// it is not scheduled.
	DeletionDate time.Time
	Versions     []VersionState // oldest first
}

// VersionState is one version of a secret.
type VersionState struct {
	VersionID    string
	Stages       []string // staging labels; none means deprecated
	SecretString string   // "" when the version holds a binary value
	SecretBinary []byte   // nil when the version holds a string value
	CreatedDate  time.Time
}

// secret is the stored form of a secret. Server.mu guards it.
type secret struct {
	name         string
	arn          string
	description  string
	kmsKeyID     string
	tags         []tag // in the order they were added
	created      time.Time
	lastChanged  time.Time
	lastAccessed time.Time // truncated to the day, as AWS reports it
	deletedAt    time.Time // zero unless scheduled for deletion
	deletionDate time.Time
	versions     []*version // oldest first
}

type tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

type version struct {
	id           string
	stages       []string
	str          *string
	bin          []byte
	created      time.Time
	lastAccessed time.Time
}

func (v *version) sameValue(str *string, bin []byte) bool {
	if (v.str == nil) != (str == nil) || (v.bin == nil) != (bin == nil) {
		return false
	}
	if str != nil && *v.str != *str {
		return false
	}
	return bytes.Equal(v.bin, bin)
}

func (sec *secret) scheduled() bool { return !sec.deletedAt.IsZero() }

func (sec *secret) version(id string) *version {
	for _, v := range sec.versions {
		if v.id == id {
			return v
		}
	}
	return nil
}

func (sec *secret) versionWithStage(stage string) *version {
	for _, v := range sec.versions {
		if slices.Contains(v.stages, stage) {
			return v
		}
	}
	return nil
}

// addVersion stores v and gives it stages (AWSCURRENT when none are given):
// each label leaves the version that held it, and when AWSCURRENT moves, the
// version that held it becomes AWSPREVIOUS.
func (sec *secret) addVersion(v *version, stages []string) {
	if len(stages) == 0 {
		stages = []string{stageCurrent}
	}
	var oldCurrent *version
	if slices.Contains(stages, stageCurrent) {
		oldCurrent = sec.versionWithStage(stageCurrent)
	}
	for _, stage := range stages {
		sec.removeStage(stage)
	}
	v.stages = slices.Clone(stages)
	sec.versions = append(sec.versions, v)
	if oldCurrent != nil && !slices.Contains(stages, stagePrevious) {
		sec.removeStage(stagePrevious)
		oldCurrent.stages = append(oldCurrent.stages, stagePrevious)
	}
	sec.pruneDeprecated()
}

func (sec *secret) removeStage(stage string) {
	for _, v := range sec.versions {
		v.stages = slices.DeleteFunc(v.stages, func(s string) bool { return s == stage })
	}
}

func (sec *secret) pruneDeprecated() {
	deprecated := 0
	for _, v := range sec.versions {
		if len(v.stages) == 0 {
			deprecated++
		}
	}
	for i := 0; deprecated > maxDeprecatedVersions && i < len(sec.versions); {
		if len(sec.versions[i].stages) == 0 {
			sec.versions = slices.Delete(sec.versions, i, i+1)
			deprecated--
			continue
		}
		i++
	}
}

// versionsToStages maps each labelled version to its labels; deprecated
// versions are left out, as AWS leaves them out.
func (sec *secret) versionsToStages() map[string][]string {
	out := map[string][]string{}
	for _, v := range sec.versions {
		if len(v.stages) > 0 {
			out[v.id] = slices.Clone(v.stages)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (sec *secret) setTags(tags []tag) {
	for _, t := range tags {
		i := slices.IndexFunc(sec.tags, func(x tag) bool { return x.Key == t.Key })
		if i >= 0 {
			sec.tags[i].Value = t.Value
		} else {
			sec.tags = append(sec.tags, t)
		}
	}
}

func (sec *secret) state() SecretState {
	st := SecretState{
		Name:            sec.name,
		ARN:             sec.arn,
		Description:     sec.description,
		KmsKeyID:        sec.kmsKeyID,
		Tags:            map[string]string{},
		CreatedDate:     sec.created,
		LastChangedDate: sec.lastChanged,
		DeletedDate:     sec.deletedAt,
		DeletionDate:    sec.deletionDate,
	}
	for _, t := range sec.tags {
		st.Tags[t.Key] = t.Value
	}
	for _, v := range sec.versions {
		vs := VersionState{
			VersionID:    v.id,
			SecretBinary: bytes.Clone(v.bin),
			CreatedDate:  v.created,
		}
		if len(v.stages) > 0 {
			vs.Stages = slices.Clone(v.stages)
		}
		if v.str != nil {
			vs.SecretString = *v.str
		}
		st.Versions = append(st.Versions, vs)
	}
	return st
}

// Secret returns a snapshot of the secret with this name or ARN, including
// one scheduled for deletion, and whether it exists.
func (s *Server) Secret(name string) (SecretState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(name)
	if sec == nil {
		return SecretState{}, false
	}
	return sec.state(), true
}

// PutSecretDirect stores value as the new AWSCURRENT version of the secret
// name, creating the secret when it does not exist, without an API call (and
// without counting one). tags are added to the secret's tags. A secret
// scheduled for deletion is restored first.
func (s *Server) PutSecretDirect(name, value string, tags map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	sec := s.lookupLocked(name)
	if sec == nil {
		sec = s.newSecretLocked(name, now)
	}
	sec.deletedAt, sec.deletionDate = time.Time{}, time.Time{}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		sec.setTags([]tag{{Key: k, Value: tags[k]}})
	}
	sec.addVersion(&version{id: newUUID(), str: &value, created: now}, nil)
	sec.lastChanged = now
}

func (s *Server) newSecretLocked(name string, now time.Time) *secret {
	sec := &secret{
		name:        name,
		arn:         s.secretARNPrefix() + name + "-" + randomString(6, alphanumeric),
		created:     now,
		lastChanged: now,
	}
	s.secrets[name] = sec
	return sec
}

func (s *Server) secretARNPrefix() string {
	return "arn:aws:secretsmanager:" + s.region + ":" + s.accountID + ":secret:"
}

// lookupLocked finds a secret by name, full ARN or partial ARN (the ARN
// without its random suffix), first removing secrets whose recovery window
// has passed.
func (s *Server) lookupLocked(id string) *secret {
	s.purgeLocked()
	if sec, ok := s.secrets[id]; ok {
		return sec
	}
	rest, ok := strings.CutPrefix(id, s.secretARNPrefix())
	if !ok {
		return nil
	}
	for _, sec := range s.secrets {
		if sec.arn == id {
			return sec
		}
	}
	return s.secrets[rest]
}

// purgeLocked removes the scheduled secrets whose deletion date has passed.
func (s *Server) purgeLocked() {
	now := s.now()
	for name, sec := range s.secrets {
		if sec.scheduled() && !now.Before(sec.deletionDate) {
			delete(s.secrets, name)
		}
	}
}
