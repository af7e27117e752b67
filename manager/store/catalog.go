package store

import (
	"context"
	"time"
)

// Scope is where a connector or credential lives. Org requires Account;
// Project requires Org.
type Scope struct {
	Account string
	Org     string
	Project string
}

// String is account, account/org or account/org/project.
func (s Scope) String() string {
	out := s.Account
	if s.Org != "" {
		out += "/" + s.Org
	}
	if s.Project != "" {
		out += "/" + s.Project
	}
	return out
}

// IsZero reports whether s is the zero Scope: no scope at all.
func (s Scope) IsZero() bool { return s == Scope{} }

// Contains reports whether o is s or below it: the same account and, where
// s names them, the same org and project. account contains account/org and
// account/org/project; a project contains only itself. The zero Scope
// contains only itself.
func (s Scope) Contains(o Scope) bool {
	return s.Account == o.Account &&
		(s.Org == "" || s.Org == o.Org && (s.Project == "" || s.Project == o.Project))
}

// Parent returns the scope above s and whether there is one.
func (s Scope) Parent() (Scope, bool) {
	switch {
	case s.Project != "":
		return Scope{Account: s.Account, Org: s.Org}, true
	case s.Org != "":
		return Scope{Account: s.Account}, true
	}
	return Scope{}, false
}

// Connector is a stored connector. The store indexes it by Scope and ID and
// enforces one Default per scope; Data is the marshaled
// delegate.v1.Connector, opaque to the store.
type Connector struct {
	Scope     Scope
	ID        string
	Default   bool
	Data      []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Credential is a builtin secret. Sealed is its value encrypted by the
// manager (AES-256-GCM); the store never sees plaintext.
type Credential struct {
	Scope     Scope
	Name      string
	Sealed    []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// SigningKey is an OIDC issuer key. Private is sealed by the manager;
// Public is the public JWK (JSON). A retired key signs nothing new but its
// public key stays published until Expires, when its tokens have expired.
type SigningKey struct {
	ID        string
	Private   []byte
	Public    []byte
	CreatedAt time.Time
	// RetiredAt is zero for the active key.
	RetiredAt time.Time
	// Expires is zero until the key is retired.
	Expires time.Time
}

// Catalog is the manager's durable configuration besides tasks:
// connectors, builtin credentials, OIDC signing keys and operator-assigned
// delegate tags. Every method is safe for concurrent use and returns
// ErrClosed after Close. No method modifies or keeps a reference to its
// arguments or their slices, and what a method returns is the caller's to
// change. Lists of nothing are empty, not an error.
type Catalog interface {
	// CreateConnector stores a new connector. ErrExists if Scope+ID is
	// taken (checked first); ErrDefaultTaken if c.Default and the scope has
	// another default connector. Timestamps are set by the store:
	// CreatedAt and UpdatedAt to the current time, whatever c says.
	CreateConnector(ctx context.Context, c *Connector) error
	// UpdateConnector replaces an existing connector (CreatedAt kept,
	// UpdatedAt set to the current time). ErrNotFound if missing (checked
	// first); ErrDefaultTaken if c.Default and another connector is the
	// scope's default. Keeping the default connector default is fine;
	// clearing Default frees the scope's slot.
	UpdateConnector(ctx context.Context, c *Connector) error
	// GetConnector returns the connector, or ErrNotFound. It does not fall
	// back to parent scopes: callers walk Scope.Parent.
	GetConnector(ctx context.Context, s Scope, id string) (*Connector, error)
	// DefaultConnector returns the scope's default connector, or
	// ErrNotFound. No fallback either.
	DefaultConnector(ctx context.Context, s Scope) (*Connector, error)
	// ListConnectors returns the connectors of exactly scope s, by ID in
	// byte order (as Go compares strings, not a locale's collation).
	ListConnectors(ctx context.Context, s Scope) ([]*Connector, error)
	// AllConnectors returns the connectors of every scope, by scope (its
	// parts in byte order: account, then org, then project) and ID. For
	// migrations at startup, which must visit each stored connector.
	AllConnectors(ctx context.Context) ([]*Connector, error)
	// DeleteConnector removes a connector, or returns ErrNotFound. Deleting
	// the default connector leaves the scope without one.
	DeleteConnector(ctx context.Context, s Scope, id string) error

	// PutCredential creates or replaces a credential. Timestamps are set by
	// the store: CreatedAt to the current time on create and kept on
	// replace, UpdatedAt to the current time.
	PutCredential(ctx context.Context, c *Credential) error
	// GetCredential returns the credential, or ErrNotFound (no fallback).
	GetCredential(ctx context.Context, s Scope, name string) (*Credential, error)
	// ListCredentials returns the credentials of exactly scope s, by name
	// in byte order, with Sealed left empty.
	ListCredentials(ctx context.Context, s Scope) ([]*Credential, error)
	// DeleteCredential removes a credential, or returns ErrNotFound.
	DeleteCredential(ctx context.Context, s Scope, name string) error

	// PutSigningKey creates or replaces a key by ID. CreatedAt is the
	// caller's (the current time if zero) and is kept on replace, so that
	// retiring a key does not reorder it; RetiredAt and Expires are stored
	// as given.
	PutSigningKey(ctx context.Context, k *SigningKey) error
	// ListSigningKeys returns every key, oldest first (by CreatedAt, then
	// ID).
	ListSigningKeys(ctx context.Context) ([]*SigningKey, error)
	// DeleteSigningKey removes a key, or returns ErrNotFound.
	DeleteSigningKey(ctx context.Context, id string) error

	// SetDelegateTags replaces the operator tags of the named delegate
	// (nil or empty removes the entry; removing an entry that does not
	// exist is not an error). Tags are stored as given: normalizing them is
	// the caller's business.
	SetDelegateTags(ctx context.Context, name string, tags []string) error
	// DelegateTags returns the operator tags of every delegate that has
	// some, by delegate name. The order of each delegate's tags is not
	// promised.
	DelegateTags(ctx context.Context) (map[string][]string, error)
}
