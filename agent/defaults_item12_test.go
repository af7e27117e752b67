package agent_test

import (
	"testing"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/config/configtest"
)

// TestItem12AgentYAMLShowsDefaults: every key configs/agent.yaml does
// not mark an example holds DefaultConfig()'s value, and every setting
// is in the file (configtest states the convention).
func TestItem12AgentYAMLShowsDefaults(t *testing.T) {
	t.Parallel()
	configtest.CheckDefaults(t, "../configs/agent.yaml", agent.DefaultConfig())
}
