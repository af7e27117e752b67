package main

import (
	"testing"

	"github.com/smdelegate/smdelegate/manager/connector"
)

// TestConnectorExampleIsValid: configs/connector.example.yaml, which the
// README points operators to, parses and validates, every field of it
// known (a renamed or misspelt field fails the parse).
func TestConnectorExampleIsValid(t *testing.T) {
	t.Parallel()
	c, err := readConnectorFile("../../configs/connector.example.yaml")
	if err != nil {
		t.Fatalf("readConnectorFile: %v", err)
	}
	connector.Normalize(c)
	if err := connector.Validate(c); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.GetManagedByTagKey() != "managed-by" || c.GetIdentifier() != "team_a" {
		t.Errorf("example connector = %q with managed_by_tag_key %q, want team_a with managed-by", c.GetIdentifier(), c.GetManagedByTagKey())
	}
}
