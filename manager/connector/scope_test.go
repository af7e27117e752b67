package connector_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func TestScopeKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   *delegatev1.Scope
		want string
	}{
		{nil, ""},
		{&delegatev1.Scope{Account: "a"}, "a"},
		{&delegatev1.Scope{Account: "a", Org: "o"}, "a/o"},
		{&delegatev1.Scope{Account: "a", Org: "o", Project: "p"}, "a/o/p"},
		{&delegatev1.Scope{Account: "a", Project: "p"}, "a//p"},
	}
	for _, tt := range tests {
		if got := connector.ScopeKey(tt.in); got != tt.want {
			t.Errorf("ScopeKey(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		want      *delegatev1.Scope
		wantField string
		wantRule  string
	}{
		{"acct", &delegatev1.Scope{Account: "acct"}, "", ""},
		{"acct/org", &delegatev1.Scope{Account: "acct", Org: "org"}, "", ""},
		{"acct/org/proj", &delegatev1.Scope{Account: "acct", Org: "org", Project: "proj"}, "", ""},
		{" acct / org ", &delegatev1.Scope{Account: "acct", Org: "org"}, "", ""},
		{"_a/_o/_p", &delegatev1.Scope{Account: "_a", Org: "_o", Project: "_p"}, "", ""},
		{"", nil, "scope", "must be account, account/org or account/org/project"},
		{"a/b/c/d", nil, "scope", "must be account, account/org or account/org/project"},
		{"a//p", nil, "scope", "must be account, account/org or account/org/project"},
		{"a/", nil, "scope", "must be account, account/org or account/org/project"},
		{"/o", nil, "scope", "must be account, account/org or account/org/project"},
		{"my-acct", nil, "scope.account", ruleIdent},
		{"a/9org", nil, "scope.org", ruleIdent},
		{"a/o/p.x", nil, "scope.project", ruleIdent},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := connector.ParseScope(tt.in)
			if tt.wantField != "" {
				if findField(fieldErrors(t, err), tt.wantField, tt.wantRule) == nil {
					t.Fatalf("ParseScope(%q) = %v, %v, want %s: %s", tt.in, got, err, tt.wantField, tt.wantRule)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseScope(%q) = %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("ParseScope(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
			if key := connector.ScopeKey(got); key != strings.ReplaceAll(tt.in, " ", "") {
				t.Errorf("ScopeKey(ParseScope(%q)) = %q, want it to round-trip", tt.in, key)
			}
		})
	}
}

var errNotFound = errors.New("store: not found")

func isNotFound(err error) bool { return errors.Is(err, errNotFound) }

// fakeCatalog serves connectors by scope key and records the scopes asked.
type fakeCatalog struct {
	byScope map[string]*delegatev1.Connector
	errAt   map[string]error
	asked   []string
}

func (f *fakeCatalog) get(_ context.Context, s *delegatev1.Scope) (*delegatev1.Connector, error) {
	key := connector.ScopeKey(s)
	f.asked = append(f.asked, key)
	if err := f.errAt[key]; err != nil {
		return nil, err
	}
	if c, ok := f.byScope[key]; ok {
		return c, nil
	}
	return nil, errNotFound
}

func TestLookup(t *testing.T) {
	t.Parallel()
	at := func(id string) *delegatev1.Connector { return &delegatev1.Connector{Identifier: id} }
	boom := errors.New("disk on fire")
	tests := []struct {
		name      string
		scope     *delegatev1.Scope
		byScope   map[string]*delegatev1.Connector
		errAt     map[string]error
		want      string // identifier found; "" for an error
		wantAsked []string
		wantErr   error
	}{
		{"project itself", &delegatev1.Scope{Account: "a", Org: "o", Project: "p"},
			map[string]*delegatev1.Connector{"a/o/p": at("proj"), "a/o": at("org"), "a": at("acct")},
			nil, "proj", []string{"a/o/p"}, nil},
		{"project falls back to org", &delegatev1.Scope{Account: "a", Org: "o", Project: "p"},
			map[string]*delegatev1.Connector{"a/o": at("org"), "a": at("acct")},
			nil, "org", []string{"a/o/p", "a/o"}, nil},
		{"project falls back to account", &delegatev1.Scope{Account: "a", Org: "o", Project: "p"},
			map[string]*delegatev1.Connector{"a": at("acct")},
			nil, "acct", []string{"a/o/p", "a/o", "a"}, nil},
		{"org falls back to account", &delegatev1.Scope{Account: "a", Org: "o"},
			map[string]*delegatev1.Connector{"a": at("acct"), "a/o/p": at("proj")},
			nil, "acct", []string{"a/o", "a"}, nil},
		{"account only", &delegatev1.Scope{Account: "a"},
			map[string]*delegatev1.Connector{"a": at("acct")},
			nil, "acct", []string{"a"}, nil},
		{"nowhere", &delegatev1.Scope{Account: "a", Org: "o", Project: "p"},
			nil, nil, "", []string{"a/o/p", "a/o", "a"}, errNotFound},
		{"other error stops the walk", &delegatev1.Scope{Account: "a", Org: "o", Project: "p"},
			map[string]*delegatev1.Connector{"a": at("acct")},
			map[string]error{"a/o": boom}, "", []string{"a/o/p", "a/o"}, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeCatalog{byScope: tt.byScope, errAt: tt.errAt}
			before := connector.ScopeKey(tt.scope)
			got, err := connector.Lookup(t.Context(), tt.scope, f.get, isNotFound)
			if diff := cmp.Diff(tt.wantAsked, f.asked); diff != "" {
				t.Errorf("Lookup asked scopes (-want +got):\n%s", diff)
			}
			if connector.ScopeKey(tt.scope) != before {
				t.Errorf("Lookup changed the scope to %v", tt.scope)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Lookup() = %v, %v, want error %v", got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), before) {
					t.Errorf("Lookup() error %q does not name the scope %s", err, before)
				}
				return
			}
			if err != nil || got.GetIdentifier() != tt.want {
				t.Fatalf("Lookup() = %v, %v, want %s", got, err, tt.want)
			}
		})
	}
}

func TestLookupNotFoundIsRecognised(t *testing.T) {
	t.Parallel()
	f := &fakeCatalog{}
	_, err := connector.Lookup(t.Context(), &delegatev1.Scope{Account: "a", Org: "o"}, f.get, isNotFound)
	if !isNotFound(err) {
		t.Errorf("Lookup() = %v, want isNotFound to recognise it", err)
	}
	if want := "a/o, a"; !strings.Contains(err.Error(), want) {
		t.Errorf("Lookup() = %q, want it to list the scopes tried (%s)", err, want)
	}
}

func TestLookupNilConnectorIsNotFound(t *testing.T) {
	t.Parallel()
	var asked int
	get := func(context.Context, *delegatev1.Scope) (*delegatev1.Connector, error) { asked++; return nil, nil }
	_, err := connector.Lookup(t.Context(), &delegatev1.Scope{Account: "a", Org: "o"}, get, isNotFound)
	if !errors.Is(err, connector.ErrNotFound) || asked != 2 {
		t.Errorf("Lookup() = %v after %d calls, want ErrNotFound after 2", err, asked)
	}
}

func TestLookupInvalidScope(t *testing.T) {
	t.Parallel()
	get := func(context.Context, *delegatev1.Scope) (*delegatev1.Connector, error) {
		t.Fatal("get called for an invalid scope")
		return nil, nil
	}
	for _, s := range []*delegatev1.Scope{nil, {Org: "o"}, {Account: "a", Project: "p"}, {Account: "a-b"}} {
		if _, err := connector.Lookup(t.Context(), s, get, isNotFound); len(fieldErrors(t, err)) == 0 {
			t.Errorf("Lookup(%v) = %v, want a field error", s, err)
		}
	}
}

func TestLookupStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var asked int
	get := func(context.Context, *delegatev1.Scope) (*delegatev1.Connector, error) {
		asked++
		cancel()
		return nil, errNotFound
	}
	_, err := connector.Lookup(ctx, &delegatev1.Scope{Account: "a", Org: "o", Project: "p"}, get, isNotFound)
	if !errors.Is(err, context.Canceled) || asked != 1 {
		t.Errorf("Lookup() = %v after %d calls, want context.Canceled after 1", err, asked)
	}
}
