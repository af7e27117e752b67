package manager

import (
	"slices"
	"strings"
)

// normalizeTags trims and lower-cases tags, drops empty ones, and returns
// them sorted and unique: the form selectors and tags are compared in.
func normalizeTags(in []string) []string {
	out := make([]string, 0, len(in))
	for _, t := range in {
		if t = strings.ToLower(strings.TrimSpace(t)); t != "" {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tagSet is a delegate's effective tags.
type tagSet map[string]struct{}

func newTagSet(groups ...[]string) tagSet {
	s := tagSet{}
	for _, g := range groups {
		for _, t := range normalizeTags(g) {
			s[t] = struct{}{}
		}
	}
	return s
}

// hasAll reports whether every selector is in s. Selectors are normalized.
func (s tagSet) hasAll(selectors []string) bool {
	for _, sel := range selectors {
		if _, ok := s[sel]; !ok {
			return false
		}
	}
	return true
}

func (s tagSet) sorted() []string {
	out := make([]string, 0, len(s))
	for t := range s {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}
