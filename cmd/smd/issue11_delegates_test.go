package main

import (
	"bytes"
	"strings"
	"testing"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// smd delegate list shows the replica holding each delegate when the
// manager is a replica of a cluster, and the running count another
// replica reported; a single manager's table is unchanged.
func TestIssue11DelegateListReplicaColumn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		ds     []*delegatev1.DelegateInfo
		header string
		row    string
	}{
		{"single manager", []*delegatev1.DelegateInfo{{Name: "a", Capacity: 4, RunningTasks: []string{"t1"}}},
			"NAME  STATE      SCOPE  TAGS  RUNNING  VERSION  CONNECTED  LAST SEEN", "1/4"},
		{"cluster", []*delegatev1.DelegateInfo{{Name: "a", Capacity: 4, Running: 3, Replica: "host-b-12-abcd"}},
			"REPLICA", "3/4"},
	} {
		var b bytes.Buffer
		if err := printDelegates(&b, &delegatev1.ListDelegatesResponse{Delegates: tc.ds}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(b.String(), "\n")
		if !strings.Contains(lines[0], tc.header) || !strings.Contains(lines[1], tc.row) {
			t.Errorf("%s: table =\n%s\nwant header with %q, row with %q", tc.name, b.String(), tc.header, tc.row)
		}
		if hasReplica := strings.Contains(lines[0], "REPLICA"); hasReplica != (tc.ds[0].GetReplica() != "") {
			t.Errorf("%s: REPLICA column shown = %v", tc.name, hasReplica)
		}
		if tc.ds[0].GetReplica() != "" && !strings.HasSuffix(strings.TrimSpace(lines[1]), tc.ds[0].GetReplica()) {
			t.Errorf("%s: row %q does not end with the replica", tc.name, lines[1])
		}
	}
}
