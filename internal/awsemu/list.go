package awsemu

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

const defaultMaxResults = 100

type secretListEntry struct {
	ARN                    string              `json:"ARN"`
	Name                   string              `json:"Name"`
	Description            *string             `json:"Description,omitempty"`
	KmsKeyID               *string             `json:"KmsKeyId,omitempty"`
	CreatedDate            *epoch              `json:"CreatedDate,omitempty"`
	LastChangedDate        *epoch              `json:"LastChangedDate,omitempty"`
	LastAccessedDate       *epoch              `json:"LastAccessedDate,omitempty"`
	DeletedDate            *epoch              `json:"DeletedDate,omitempty"`
	Tags                   []tag               `json:"Tags,omitempty"`
	SecretVersionsToStages map[string][]string `json:"SecretVersionsToStages,omitempty"`
}

type listSecretsOutput struct {
	SecretList []secretListEntry `json:"SecretList"`
	NextToken  *string           `json:"NextToken,omitempty"`
}

// pageToken is the opaque NextToken: the sort position of the last item
// returned, so a page boundary survives secrets being added or removed.
type pageToken struct {
	Kind    string    `json:"k"` // which listing issued it
	SortBy  string    `json:"b,omitempty"`
	Order   string    `json:"o,omitempty"`
	Name    string    `json:"n"`
	Created time.Time `json:"c"`
	Changed time.Time `json:"u,omitzero"`
	Access  time.Time `json:"a,omitzero"`
}

func encodeToken(t pageToken) *string {
	b, _ := json.Marshal(t)
	s := base64.RawURLEncoding.EncodeToString(b)
	return &s
}

func decodeToken(s, kind string) (pageToken, *apiError) {
	var t pageToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.Kind != kind {
		return t, errf(400, "InvalidNextTokenException", "The NextToken value is invalid.")
	}
	return t, nil
}

func maxResults(n *int64) (int, *apiError) {
	if n == nil {
		return defaultMaxResults, nil
	}
	if *n < 1 || *n > 100 {
		return 0, errValidation("1 validation error detected: Value at 'maxResults' failed to satisfy constraint: " +
			"Member must have value between 1 and 100")
	}
	return int(*n), nil
}

var filterKeys = []string{"description", "name", "tag-key", "tag-value", "primary-region", "owning-service", "all"}

// listSecrets lists secrets, by default newest first (SortBy created-date,
// SortOrder desc), with the name as tie-breaker so the order is total.
func (s *Server) listSecrets(in *smInput) (any, *apiError) {
	limit, e := maxResults(in.MaxResults)
	if e != nil {
		return nil, e
	}
	if len(in.Filters) > 10 {
		return nil, errValidation("1 validation error detected: Value at 'filters' failed to satisfy constraint: " +
			"Member must have length less than or equal to 10")
	}
	for _, f := range in.Filters {
		if !slices.Contains(filterKeys, f.Key) {
			return nil, errValidation("1 validation error detected: Value '%s' at 'filters.member.key' failed to satisfy constraint: "+
				"Member must satisfy enum value set: [%s]", f.Key, strings.Join(filterKeys, ", "))
		}
		if len(f.Values) > 10 {
			return nil, errValidation("1 validation error detected: Value at 'filters.member.values' failed to satisfy constraint: " +
				"Member must have length less than or equal to 10")
		}
	}
	sortBy, order := "created-date", "desc"
	if in.SortBy != nil {
		sortBy = *in.SortBy
	}
	if in.SortOrder != nil {
		order = *in.SortOrder
	}
	if !slices.Contains([]string{"created-date", "last-accessed-date", "last-changed-date", "name"}, sortBy) {
		return nil, errValidation("1 validation error detected: Value '%s' at 'sortBy' failed to satisfy constraint: "+
			"Member must satisfy enum value set: [created-date, last-accessed-date, last-changed-date, name]", sortBy)
	}
	if order != "asc" && order != "desc" {
		return nil, errValidation("1 validation error detected: Value '%s' at 'sortOrder' failed to satisfy constraint: "+
			"Member must satisfy enum value set: [asc, desc]", order)
	}
	var after *pageToken
	if in.NextToken != nil {
		t, e := decodeToken(*in.NextToken, "secrets")
		if e != nil {
			return nil, e
		}
		if t.SortBy != sortBy || t.Order != order {
			return nil, errf(400, "InvalidNextTokenException", "The NextToken was issued for a different sort order.")
		}
		after = &t
	}
	includeDeleted := in.IncludePlannedDeletion != nil && *in.IncludePlannedDeletion

	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked()
	var matched []*secret
	for _, sec := range s.secrets {
		if sec.scheduled() && !includeDeleted {
			continue
		}
		if matchesFilters(sec, in.Filters) {
			matched = append(matched, sec)
		}
	}
	less := func(a, b pageToken) int {
		var c int
		switch sortBy {
		case "name":
			c = 0
		case "last-accessed-date":
			c = a.Access.Compare(b.Access)
		case "last-changed-date":
			c = a.Changed.Compare(b.Changed)
		default:
			c = a.Created.Compare(b.Created)
		}
		if order == "desc" {
			c = -c
		}
		return cmp.Or(c, strings.Compare(a.Name, b.Name))
	}
	key := func(sec *secret) pageToken {
		return pageToken{Kind: "secrets", SortBy: sortBy, Order: order, Name: sec.name,
			Created: sec.created, Changed: sec.lastChanged, Access: sec.lastAccessed}
	}
	slices.SortFunc(matched, func(a, b *secret) int { return less(key(a), key(b)) })
	if after != nil {
		i, _ := slices.BinarySearchFunc(matched, *after, func(sec *secret, t pageToken) int {
			if less(key(sec), t) <= 0 {
				return -1
			}
			return 1
		})
		matched = matched[i:]
	}

	out := listSecretsOutput{SecretList: []secretListEntry{}}
	for i, sec := range matched {
		if i == limit {
			out.NextToken = encodeToken(key(matched[i-1]))
			break
		}
		out.SecretList = append(out.SecretList, secretListEntry{
			ARN:                    sec.arn,
			Name:                   sec.name,
			Description:            strp(sec.description),
			KmsKeyID:               strp(sec.kmsKeyID),
			CreatedDate:            ep(sec.created),
			LastChangedDate:        ep(sec.lastChanged),
			LastAccessedDate:       ep(sec.lastAccessed),
			DeletedDate:            ep(sec.deletedAt),
			Tags:                   slices.Clone(sec.tags),
			SecretVersionsToStages: sec.versionsToStages(),
		})
	}
	return out, nil
}

// matchesFilters applies ListSecrets filters: every filter must match; within
// a filter any positive value may match, and no "!"-negated value may.
func matchesFilters(sec *secret, filters []filter) bool {
	for _, f := range filters {
		positive, matchedPositive := false, false
		for _, v := range f.Values {
			negated := strings.HasPrefix(v, "!")
			v = strings.TrimPrefix(v, "!")
			m := matchesFilter(sec, f.Key, v)
			if negated && m {
				return false
			}
			if !negated {
				positive = true
				matchedPositive = matchedPositive || m
			}
		}
		if positive && !matchedPositive {
			return false
		}
	}
	return true
}

// matchesFilter reports whether one filter value matches, as the
// ListSecrets Filter documentation describes: prefix matches, case-sensitive
// except for description and all; "all" needs every word to prefix-match
// some attribute.
func matchesFilter(sec *secret, key, value string) bool {
	anyPrefix := func(values []string, prefix string, fold bool) bool {
		for _, v := range values {
			if fold {
				v, prefix = strings.ToLower(v), strings.ToLower(prefix)
			}
			if strings.HasPrefix(v, prefix) {
				return true
			}
		}
		return false
	}
	var tagKeys, tagValues []string
	for _, t := range sec.tags {
		tagKeys = append(tagKeys, t.Key)
		tagValues = append(tagValues, t.Value)
	}
	switch key {
	case "name":
		return strings.HasPrefix(sec.name, value)
	case "description":
		return anyPrefix([]string{sec.description}, value, true)
	case "tag-key":
		return anyPrefix(tagKeys, value, false)
	case "tag-value":
		return anyPrefix(tagValues, value, false)
	case "all":
		attrs := append(append([]string{sec.name, sec.description}, tagKeys...), tagValues...)
		for _, word := range strings.Fields(value) {
			if !anyPrefix(attrs, word, true) {
				return false
			}
		}
		return true
	default: // primary-region, owning-service: no emulated secret is replicated or service-owned
		return false
	}
}

type versionListEntry struct {
	VersionID        string   `json:"VersionId"`
	VersionStages    []string `json:"VersionStages,omitempty"`
	CreatedDate      *epoch   `json:"CreatedDate,omitempty"`
	LastAccessedDate *epoch   `json:"LastAccessedDate,omitempty"`
}

type listVersionsOutput struct {
	ARN       string             `json:"ARN"`
	Name      string             `json:"Name"`
	Versions  []versionListEntry `json:"Versions"`
	NextToken *string            `json:"NextToken,omitempty"`
}

// listSecretVersionIDs lists versions oldest first; deprecated versions (no
// staging label) only with IncludeDeprecated.
func (s *Server) listSecretVersionIDs(in *smInput) (any, *apiError) {
	if e := validateSecretID(in.SecretID); e != nil {
		return nil, e
	}
	limit, e := maxResults(in.MaxResults)
	if e != nil {
		return nil, e
	}
	var after *pageToken
	if in.NextToken != nil {
		t, e := decodeToken(*in.NextToken, "versions")
		if e != nil {
			return nil, e
		}
		after = &t
	}
	includeDeprecated := in.IncludeDeprecated != nil && *in.IncludeDeprecated

	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(*in.SecretID)
	if sec == nil {
		return nil, errNotFound()
	}
	out := listVersionsOutput{ARN: sec.arn, Name: sec.name, Versions: []versionListEntry{}}
	started := after == nil
	for _, v := range sec.versions {
		if !started {
			started = v.id == after.Name
			continue
		}
		if len(v.stages) == 0 && !includeDeprecated {
			continue
		}
		if len(out.Versions) == limit {
			last := out.Versions[limit-1].VersionID
			out.NextToken = encodeToken(pageToken{Kind: "versions", Name: last})
			break
		}
		out.Versions = append(out.Versions, versionListEntry{
			VersionID:        v.id,
			VersionStages:    slices.Clone(v.stages),
			CreatedDate:      ep(v.created),
			LastAccessedDate: ep(v.lastAccessed),
		})
	}
	if !started {
		return nil, errf(400, "InvalidNextTokenException", "The NextToken value is invalid.")
	}
	return out, nil
}
