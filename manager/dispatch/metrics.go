package dispatch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the manager's Prometheus collectors, on a registry of its
// own so several managers can live in one test process.
type Metrics struct {
	reg             *prometheus.Registry
	delegates       prometheus.Gauge
	queued          prometheus.Gauge
	dispatchLatency prometheus.Histogram
	outcomes        *prometheus.CounterVec
	submitted       *prometheus.CounterVec
	staleResults    prometheus.Counter
	redispatched    prometheus.Counter
	deduplicated    *prometheus.CounterVec
	limitRefusals   *prometheus.CounterVec
	// streamsClosed counts the delegate streams the manager ended because
	// the delegate misbehaved, by reason (liveness.go).
	streamsClosed *prometheus.CounterVec
	// outboxPeak is the most messages queued at once to one delegate
	// stream since the start (liveness.go).
	outboxPeak prometheus.Gauge
}

func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		delegates: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smd_connected_delegates", Help: "Delegates with an open stream.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smd_queued_tasks", Help: "Tasks waiting for an eligible delegate with credit.",
		}),
		dispatchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "smd_dispatch_latency_seconds",
			Help:    "Time from a task entering the queue to its dispatch to a delegate.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12),
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smd_task_outcomes_total", Help: "Tasks completed, by outcome code.",
		}, []string{"code"}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smd_tasks_submitted_total", Help: "Tasks submitted, by kind.",
		}, []string{"kind"}),
		staleResults: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smd_stale_results_total", Help: "Results discarded because their lease was no longer current.",
		}),
		redispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "smd_tasks_requeued_total", Help: "Tasks returned to the queue after their lease expired or the manager closed their delegate's stream.",
		}),
		deduplicated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smd_tasks_deduplicated_total",
			Help: "Submissions that repeated an earlier request under its request_id and got its task instead of a new one, by kind.",
		}, []string{"kind"}),
		limitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smd_limit_refusals_total",
			Help: "Submissions refused by a limit (submit_rate, scope_unfinished_tasks, scope_payload_bytes), by limit and operator token name.",
		}, []string{"limit", "token"}),
		streamsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smd_delegate_streams_closed_total",
			Help: "Delegate streams the manager closed, by reason: outbox_full (the delegate did not read its stream), " +
				"missed_heartbeats (it went silent), invalid_message (it broke the protocol).",
		}, []string{"reason"}),
		outboxPeak: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smd_delegate_outbox_peak_messages",
			Help: "The most messages waiting at once to be sent on one delegate stream since the manager started; a stream is closed when it reaches 4 × capacity + 64.",
		}),
	}
	for _, r := range []string{CloseOutboxFull, CloseMissedHeartbeats, CloseInvalidMessage} {
		m.streamsClosed.WithLabelValues(r) // exported at 0 from the start
	}
	m.reg.MustRegister(m.delegates, m.queued, m.dispatchLatency, m.outcomes, m.submitted, m.staleResults, m.redispatched, m.deduplicated, m.limitRefusals,
		m.streamsClosed, m.outboxPeak,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// testutilValue reads a counter's value.
func testutilValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
