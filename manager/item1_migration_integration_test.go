package manager_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// logLine is the part of a JSON log line the migration test reads.
type logLine struct {
	Level           string `json:"level"`
	Message         string `json:"message"`
	Connector       string `json:"connector"`
	Field           string `json:"field"`
	Reference       string `json:"reference"`
	CredentialScope string `json:"credential_scope"`
	Connectors      int    `json:"connectors"`
}

// migrationLines returns the log lines about the binding migration.
func migrationLines(t *testing.T, raw []byte) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Bytes(), err)
		}
		if strings.HasPrefix(l.Message, "migration:") || strings.Contains(l.Message, "stored before bindings") {
			out = append(out, l)
		}
	}
	return out
}

// TestItem1MigrationBindsOldConnectors stores connectors the way a
// manager before bindings did (no credential_bindings; one with a binding
// planted by a client, which such a manager kept as an unknown field),
// then starts a manager on the store. Each reference is bound once, from
// the connector's own scope upward: to the nearest credential, to the
// account's when the project has none (logged at warn), to the
// connector's own scope when none exists (logged at warn); the planted
// binding is dropped (logged at warn) and the reference bound as if it
// were absent. Tasks then follow the bindings, and a second start
// changes and logs nothing.
func TestItem1MigrationBindsOldConnectors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	vals := map[string]string{}
	for _, k := range []string{"acct_only", "proj_cred", "both@acct", "both@proj", "nowhere"} {
		vals[k] = "value-" + k + "-" + ids.Random()
	}
	keyUp, keyMissing := "AKIAUP"+ids.Random()[:8], "AKIAMISS"+ids.Random()[:8]
	_, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyUp: vals["acct_only"], keyMissing: vals["nowhere"]}})

	old := mustManagerAt(t, dir, testLogger(t), withScopedTokens)
	admin, adminCtx := operator(t, old.Addr())
	for _, p := range []struct {
		sc         *delegatev1.Scope
		name, from string
	}{{scopeA, "acct_only", "acct_only"}, {scopeAP, "proj_cred", "proj_cred"}, {scopeA, "both", "both@acct"}, {scopeAP, "both", "both@proj"}} {
		if _, err := admin.PutCredential(adminCtx, &delegatev1.PutCredentialRequest{Scope: p.sc, Name: p.name, Value: []byte(vals[p.from])}); err != nil {
			t.Fatalf("PutCredential(%s): %v", p.name, err)
		}
	}
	old.Close(context.Background())

	// The connectors, written straight into the store as an older manager
	// stored them.
	db, err := bolt.Open(filepath.Join(dir, bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	planted := keyConnector("old_planted", scopeAP, keyUp, "both", emuURL)
	planted.CredentialBindings = []*delegatev1.CredentialBinding{{Field: "secret_access_key", Name: "both", Scope: scopeA}}
	for _, c := range []*delegatev1.Connector{
		keyConnector("old_up", scopeAP, keyUp, "acct_only", emuURL),
		keyConnector("old_own", scopeAP, keyUp, "proj_cred", emuURL),
		keyConnector("old_near", scopeAP, keyUp, "both", emuURL),
		keyConnector("old_missing", scopeAP, keyMissing, "nowhere", emuURL),
		planted,
		instanceRoleConnector("old_role", scopeAP),
	} {
		data, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateConnector(t.Context(), &store.Connector{Scope: store.Scope{Account: c.Scope.Account, Org: c.Scope.Org, Project: c.Scope.Project},
			ID: c.Identifier, Data: data}); err != nil {
			t.Fatalf("store %s: %v", c.Identifier, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	log, logs := bufferLogger(t)
	srv := mustManagerAt(t, dir, log, withScopedTokens)
	admin, adminCtx = operator(t, srv.Addr())
	want := map[string]*delegatev1.CredentialBinding{
		"old_up":      secretBinding("acct_only", scopeA),
		"old_own":     secretBinding("proj_cred", scopeAP),
		"old_near":    secretBinding("both", scopeAP),
		"old_missing": secretBinding("nowhere", scopeAP),
		"old_planted": secretBinding("both", scopeAP),
		"old_role":    nil,
	}
	got := map[string]*delegatev1.Connector{}
	for id, b := range want {
		c, err := admin.GetConnector(adminCtx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: scopeAP, Identifier: id}})
		if err != nil {
			t.Fatalf("GetConnector(%s) after the migration: %v", id, err)
		}
		got[id] = c
		if b == nil {
			wantBindings(t, id, c)
		} else {
			wantBindings(t, id, c, b)
		}
	}

	type warn struct{ connector, field, reference, credScope, says string }
	var warns []warn
	infos := 0
	for _, l := range migrationLines(t, logs.Bytes()) {
		switch l.Level {
		case "warn":
			says := l.Message
			for _, s := range []string{"bound above the connector's scope", "exists in no scope", "dropped credential bindings"} {
				if strings.Contains(l.Message, s) {
					says = s
				}
			}
			warns = append(warns, warn{l.Connector, l.Field, l.Reference, l.CredentialScope, says})
		case "info":
			infos++
			if l.Connectors != 5 {
				t.Errorf("the migration says it stored %d connectors, want 5", l.Connectors)
			}
		}
	}
	wantWarns := []warn{
		{"old_missing", "secret_access_key", "builtin:nowhere", "acct_a/org1/proj1", "exists in no scope"},
		{"old_planted", "", "", "", "dropped credential bindings"},
		{"old_up", "secret_access_key", "builtin:acct_only", "acct_a", "bound above the connector's scope"},
	}
	if diff := cmp.Diff(wantWarns, warns, cmp.AllowUnexported(warn{})); diff != "" {
		t.Errorf("migration warnings (-want +got):\n%s", diff)
	}
	if infos != 1 {
		t.Errorf("%d info lines about the migration, want 1", infos)
	}
	assertAbsent(t, "the manager's log", logs.Bytes(), vals)

	// Tasks follow the bindings: old_up reaches the account's credential it
	// was bound to; old_missing fails until the credential is put where it
	// is bound.
	seen := newKeysSeen()
	startSecretAgent(t, srv.Addr(), "dlg-any", nil, testLogger(t), seen.onRun)
	waitDelegates(t, admin, adminCtx, 1)
	test := func(id string) error {
		_, err := admin.TestConnector(adminCtx, &delegatev1.TestConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: scopeAP, Identifier: id}})
		return err
	}
	if err := test("old_up"); err != nil {
		t.Errorf("TestConnector(old_up): %v", err)
	}
	err = test("old_missing")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "scope acct_a/org1/proj1, which no longer exists") {
		t.Errorf("TestConnector(old_missing) = %v, want PermissionDenied naming its binding", err)
	}
	if _, err := admin.PutCredential(adminCtx, &delegatev1.PutCredentialRequest{Scope: scopeAP, Name: "nowhere", Value: []byte(vals["nowhere"])}); err != nil {
		t.Fatal(err)
	}
	if err := test("old_missing"); err != nil {
		t.Errorf("TestConnector(old_missing) after putting its credential: %v", err)
	}
	srv.Close(context.Background())

	// Once: a second start binds and logs nothing, and changes nothing.
	log, logs = bufferLogger(t)
	srv = mustManagerAt(t, dir, log, withScopedTokens)
	admin, adminCtx = operator(t, srv.Addr())
	for id, c := range got {
		again, err := admin.GetConnector(adminCtx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: scopeAP, Identifier: id}})
		if err != nil {
			t.Fatalf("GetConnector(%s) after a second start: %v", id, err)
		}
		if diff := cmp.Diff(c, again, protocmp.Transform()); diff != "" {
			t.Errorf("%s changed at the second start (-first +second):\n%s", id, diff)
		}
	}
	if lines := migrationLines(t, logs.Bytes()); len(lines) != 0 {
		t.Errorf("the second start logged %d lines about the migration, want none: %+v", len(lines), lines)
	}
}
