package connector

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// ErrNotFound is wrapped by Lookup when get returned neither a connector
// nor an error at every scope it tried.
var ErrNotFound = errors.New("connector: not found")

const ruleScopeForm = "must be account, account/org or account/org/project"

// ScopeKey returns "account", "account/org" or "account/org/project": the
// form ParseScope reads and the CLI's --scope takes. A nil scope is "".
// An invalid scope with a project but no org keeps the empty org
// ("acct//proj") so that no two scopes share a key.
func ScopeKey(s *delegatev1.Scope) string {
	if s == nil {
		return ""
	}
	key := s.GetAccount()
	if s.GetOrg() != "" || s.GetProject() != "" {
		key += "/" + s.GetOrg()
	}
	if s.GetProject() != "" {
		key += "/" + s.GetProject()
	}
	return key
}

// ParseScope reads "account", "account/org" or "account/org/project"
// (whitespace around the whole and each part is trimmed). Each part must
// follow the identifier rule. Errors are *config.FieldError values for
// "scope" or "scope.account", "scope.org", "scope.project", joined.
func ParseScope(s string) (*delegatev1.Scope, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) > 3 {
		return nil, config.Errf("scope", ruleScopeForm)
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
		if parts[i] == "" {
			return nil, config.Errf("scope", ruleScopeForm)
		}
	}
	sc := &delegatev1.Scope{Account: parts[0]}
	if len(parts) > 1 {
		sc.Org = parts[1]
	}
	if len(parts) > 2 {
		sc.Project = parts[2]
	}
	if err := ValidateScope(sc); err != nil {
		return nil, err
	}
	return sc, nil
}

// ValidateScope checks a scope on its own: account required, org required
// when project is set, each part following the identifier rule. Problems
// are *config.FieldError values ("scope.org", ...) joined.
func ValidateScope(s *delegatev1.Scope) error {
	var v validator
	v.scope(s)
	return errors.Join(v.errs...)
}

// parentScope returns the scope above s (project → org → account), or nil
// above an account.
func parentScope(s *delegatev1.Scope) *delegatev1.Scope {
	switch {
	case s.GetProject() != "":
		return &delegatev1.Scope{Account: s.GetAccount(), Org: s.GetOrg()}
	case s.GetOrg() != "":
		return &delegatev1.Scope{Account: s.GetAccount()}
	}
	return nil
}

// Lookup finds a connector from scope s, trying s itself and then each
// scope above it: project, then org, then account. get fetches from exactly
// one scope (a named connector, or a scope's default: the same walk serves
// both); isNotFound says which of its errors mean "not here, try the
// parent". Lookup passes get a fresh Scope each time and never modifies s.
//
// It returns the first connector found. An error that is not a not-found
// stops the walk and is returned wrapped. When every scope says not found,
// the error names the scopes tried and wraps the last not-found error (or
// ErrNotFound if get returned a nil connector without an error), so
// isNotFound and errors.Is still recognise it. An invalid s is a
// *config.FieldError; a done ctx stops the walk with ctx.Err().
func Lookup(ctx context.Context, s *delegatev1.Scope,
	get func(context.Context, *delegatev1.Scope) (*delegatev1.Connector, error),
	isNotFound func(error) bool,
) (*delegatev1.Connector, error) {
	if err := ValidateScope(s); err != nil {
		return nil, err
	}
	var (
		tried []string
		last  error
	)
	cur := &delegatev1.Scope{Account: s.GetAccount(), Org: s.GetOrg(), Project: s.GetProject()}
	for ; cur != nil; cur = parentScope(cur) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		key := ScopeKey(cur)
		tried = append(tried, key)
		c, err := get(ctx, cur)
		switch {
		case err == nil && c != nil:
			return c, nil
		case err == nil:
			last = ErrNotFound
		case isNotFound(err):
			last = err
		default:
			return nil, fmt.Errorf("connector: lookup from %s failed at %s: %w", ScopeKey(s), key, err)
		}
	}
	return nil, fmt.Errorf("connector: none in %s: %w", strings.Join(tried, ", "), last)
}
