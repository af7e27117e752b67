package main

import (
	"slices"
	"strings"
	"testing"
)

// TestItem1ConnectorGetShowsBindings: smd connector get shows where each
// builtin:NAME reference of the connector points (issue 9, item 1), so an
// operator can see which scope's credential its tasks use.
func TestItem1ConnectorGetShowsBindings(t *testing.T) {
	t.Parallel()
	needDev(t)
	out := mustRun(t, "", "connector", "get", "dev_aws")
	var header, row []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "FIELD":
			header = f
		case len(f) > 0 && f[0] == "secret_access_key":
			row = f
		}
	}
	if !slices.Equal(header, []string{"FIELD", "REFERENCE", "BOUND", "TO", "SCOPE"}) ||
		!slices.Equal(row, []string{"secret_access_key", "builtin:dev_aws_secret_key", "default"}) {
		t.Errorf("smd connector get dev_aws shows bindings %q %q, want secret_access_key builtin:dev_aws_secret_key bound to default:\n%s", header, row, out)
	}
}
