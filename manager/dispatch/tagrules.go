package dispatch

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// MaxTagLen bounds an operator tag and a ping selector, as it bounds a
// connector's delegate selectors.
const MaxTagLen = connector.MaxSelectorLen

// maxInstanceIDLen bounds Hello.instance_id.
const maxInstanceIDLen = 128

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

// delegateName is the form a delegate's name is known by: its implicit
// tag (trimmed, lower-cased), so that " Web" and "web" are one name and
// cannot be held by two delegates at once.
func delegateName(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// checkTag checks one tag or selector as written against the one rule
// for them (connector.TagProblem: no control characters, valid UTF-8,
// not empty, not reserved once normalized) and, when maxLen > 0, its
// length. The error is a *config.FieldError naming field.
func checkTag(field, s string, maxLen int) error {
	if p := connector.TagProblem(s); p != "" {
		return config.Errf(field, "%s", p)
	}
	if maxLen > 0 && utf8.RuneCountInString(strings.TrimSpace(s)) > maxLen {
		return config.Errf(field, "must be at most %d characters", maxLen)
	}
	return nil
}

// checkTags is checkTag for each of a list, named field[i].
func CheckTags(field string, tags []string, maxLen int) error {
	for i, t := range tags {
		if err := checkTag(fmt.Sprintf("%s[%d]", field, i), t, maxLen); err != nil {
			return err
		}
	}
	return nil
}

// helloTags checks every tag a Hello gives its delegate, from every
// source (declared tags, name, host name, group), before any is
// normalized or used, and the instance id; an error is a
// *config.FieldError naming the Hello field. It returns the declared and
// the implicit tags, normalized.
func helloTags(h *delegatev1.Hello) (declared, implicit []string, err error) {
	if err := checkTag("hello.name", h.GetName(), 0); err != nil {
		return nil, nil, err
	}
	for _, f := range [...]struct{ field, v string }{{"hello.hostname", h.GetHostname()}, {"hello.group", h.GetGroup()}} {
		if f.v == "" {
			continue // optional
		}
		if err := checkTag(f.field, f.v, 0); err != nil {
			return nil, nil, err
		}
	}
	if err := CheckTags("hello.tags", h.GetTags(), 0); err != nil {
		return nil, nil, err
	}
	if id := h.GetInstanceId(); len(id) > maxInstanceIDLen || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return nil, nil, config.Errf("hello.instance_id", "must be at most %d printable ASCII characters, without spaces", maxInstanceIDLen)
	}
	return normalizeTags(h.GetTags()), normalizeTags([]string{h.GetName(), h.GetHostname(), h.GetGroup()}), nil
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
