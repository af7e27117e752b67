package main

import (
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/agent"
)

// newTaskHandler wires the agent's task handlers.
func newTaskHandler(cfg agent.Config, log zerolog.Logger) agent.Handler {
	return &agent.Tasks{Name: cfg.Name, Version: Version}
}
