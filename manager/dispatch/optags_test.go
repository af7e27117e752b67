package dispatch

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
)

// TestItem4LoadStoredOperatorTags: operator tags stored before names were
// normalized and tags bound to tokens and scopes load as the rules read
// them: a name in another form is merged into its normal form and stored
// again under it (so the old entry cannot undo a later change), scoped
// and confirmed records keep their scope and token, and entries no
// delegate can hold or carry are left out.
func TestItem4LoadStoredOperatorTags(t *testing.T) {
	t.Parallel()
	db, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := t.Context()
	for k, tags := range map[string][]string{
		" Web":                  {"gpu", "bad\x00tag"},
		"web":                   {"prod", tagTokenPrefix + "d"},
		"bad\x00name":           {"x"},
		"smd:platform":          {"x"},
		"smd:scope:acct_a:api":  {"a", tagTokenPrefix + "d-a"},
		"smd:scope:not/a/b/c:x": {"x"},
	} {
		if err := db.SetDelegateTags(ctx, k, tags); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(time.Second),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(time.Minute), MaxAttempts: 3,
	}
	d := New(cfg, db, zerolog.Nop(), NewMetrics())
	if err := d.loadTags(ctx); err != nil {
		t.Fatalf("loadTags: %v", err)
	}
	want := map[tagKey]*opTagRecord{
		{name: "web"}: {tags: []string{"gpu", "prod"}}, // two tokens: the next holder confirms
		{scope: store.Scope{Account: "acct_a"}, name: "api"}: {tags: []string{"a"}, token: "d-a"},
	}
	if diff := cmp.Diff(want, d.opTags, cmp.AllowUnexported(tagKey{}, opTagRecord{}, store.Scope{})); diff != "" {
		t.Errorf("operator tags loaded (-want +got):\n%s", diff)
	}
	stored, err := db.DelegateTags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := stored[" Web"]; ok || !slices.Equal(stored["web"], []string{"gpu", "prod"}) {
		t.Errorf("stored after loading: %q, want \" Web\" gone and web = [gpu prod]", stored)
	}
}
