package awsemu

import (
	"slices"
	"strings"
	"time"
)

const defaultRecoveryWindowDays = 30

type deleteSecretOutput struct {
	ARN          string `json:"ARN"`
	Name         string `json:"Name"`
	DeletionDate *epoch `json:"DeletionDate,omitempty"`
}

// deleteSecret schedules a secret for deletion after a recovery window, or
// with ForceDeleteWithoutRecovery removes it at once (AWS completes a force
// delete asynchronously; the emulator completes it before replying).
func (s *Server) deleteSecret(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	force := in.ForceDeleteWithoutRecovery != nil && *in.ForceDeleteWithoutRecovery
	if force && in.RecoveryWindowInDays != nil {
		return nil, errInvalidParameter("You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.")
	}
	days := int64(defaultRecoveryWindowDays)
	if in.RecoveryWindowInDays != nil {
		days = *in.RecoveryWindowInDays
		if days < 7 || days > 30 {
			return nil, errInvalidParameter("The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).")
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	sec := s.lookupLocked(*in.SecretID)
	if sec == nil {
		if !force {
			return nil, errNotFound()
		}
		// A force delete of a missing secret succeeds, so that retries are
		// safe (DeleteSecret, ForceDeleteWithoutRecovery).
		name := *in.SecretID
		arn := name
		if rest, ok := strings.CutPrefix(name, s.secretARNPrefix()); ok {
			name = rest
		} else {
			arn = s.secretARNPrefix() + name
		}
		return deleteSecretOutput{ARN: arn, Name: name, DeletionDate: ep(now)}, nil
	}
	if force {
		delete(s.secrets, sec.name)
		return deleteSecretOutput{ARN: sec.arn, Name: sec.name, DeletionDate: ep(now)}, nil
	}
	if sec.scheduled() {
		return nil, errInvalidRequest("You tried to perform the operation on a secret that's currently marked deleted.")
	}
	sec.deletedAt = now
	sec.deletionDate = now.Add(time.Duration(days) * 24 * time.Hour)
	return deleteSecretOutput{ARN: sec.arn, Name: sec.name, DeletionDate: ep(sec.deletionDate)}, nil
}

func (s *Server) restoreSecret(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(*in.SecretID)
	if sec == nil {
		return nil, errNotFound()
	}
	// Restoring a secret that is not scheduled for deletion succeeds and
	// changes nothing.
	if sec.scheduled() {
		sec.deletedAt, sec.deletionDate = time.Time{}, time.Time{}
		sec.lastChanged = s.now()
	}
	return arnNameVersion{ARN: sec.arn, Name: sec.name}, nil
}

type emptyOutput struct{}

func (s *Server) tagResource(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	if in.Tags == nil {
		return nil, errValidation("1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must not be null")
	}
	if e := validateTags(in.Tags); e != nil {
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
	if e := tagLimit(sec, in.Tags); e != nil {
		return nil, e
	}
	sec.setTags(in.Tags)
	sec.lastChanged = s.now()
	return emptyOutput{}, nil
}

func (s *Server) untagResource(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	if in.TagKeys == nil {
		return nil, errValidation("1 validation error detected: Value at 'tagKeys' failed to satisfy constraint: Member must not be null")
	}
	for _, k := range in.TagKeys {
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return nil, errInvalidParameter("You can't modify system tags. Tag key: '%s'.", k)
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
	sec.tags = slices.DeleteFunc(sec.tags, func(t tag) bool { return slices.Contains(in.TagKeys, t.Key) })
	sec.lastChanged = s.now()
	return emptyOutput{}, nil
}
