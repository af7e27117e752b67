package dispatch

import (
	"github.com/smdelegate/smdelegate/internal/config"
)

// Config holds the dispatch defaults of design §4.
type Config struct {
	// LeaseDuration is how long a dispatched task's lease lasts without a heartbeat.
	LeaseDuration config.Duration `yaml:"lease_duration"`
	// HeartbeatInterval is how often agents send heartbeats.
	HeartbeatInterval config.Duration `yaml:"heartbeat_interval"`
	// QueueTimeout fails a task NO_ELIGIBLE_DELEGATE if no delegate takes it.
	QueueTimeout config.Duration `yaml:"queue_timeout"`
	// TaskDeadline fails a task TIMEOUT if it has not completed.
	TaskDeadline config.Duration `yaml:"task_deadline"`
	// MaxAttempts is how many dispatches a task gets before DELEGATE_LOST.
	MaxAttempts int `yaml:"max_attempts"`
	// MissedHeartbeats is how many heartbeat intervals a connected
	// delegate may stay silent: after that the manager closes its stream
	// and returns its tasks to the queue at once, without waiting for
	// their leases to expire.
	MissedHeartbeats int `yaml:"missed_heartbeats"`
}

// LimitsConfig bounds what operators submit (limits.go has the rules).
type LimitsConfig struct {
	// SubmitRate is how many tasks a second one operator token may submit
	// (Ping, Secret, TestConnector), sustained.
	SubmitRate int `yaml:"submit_rate"`
	// SubmitBurst is how many it may submit at once, from a full bucket.
	SubmitBurst int `yaml:"submit_burst"`
	// ScopeUnfinishedTasks caps the queued and running tasks of one scope.
	ScopeUnfinishedTasks int `yaml:"scope_unfinished_tasks"`
	// ScopePayloadBytes caps the payload bytes those tasks hold.
	ScopePayloadBytes int `yaml:"scope_payload_bytes"`
	// PingMaxSleep caps the sleep a ping may ask for; at most half of
	// dispatch.task_deadline.
	PingMaxSleep config.Duration `yaml:"ping_max_sleep"`
}
