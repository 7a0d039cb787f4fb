package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's Prometheus series, all under "convoice_".
type Metrics struct {
	DialOuts     *prometheus.CounterVec // by node, result
	LegEnds      *prometheus.CounterVec // by state
	PBXEvents    *prometheus.CounterVec // by node, type
	Resyncs      *prometheus.CounterVec // by node, result
	ResyncFixes  *prometheus.CounterVec // by node, what
	Conferences  prometheus.Counter
	WatchdogEnds prometheus.Counter
	NodeOwner    *prometheus.GaugeVec   // by node: 1 while this replica holds its lease
	NodeLost     *prometheus.CounterVec // by node: legs ended because the node was unreachable
	// NodeHandovers counts the times this replica handed a node over
	// because it could not reach the node and another replica could.
	NodeHandovers *prometheus.CounterVec // by node
	// LegEventsIgnored counts events the leg table does not allow in the
	// leg's state (late, duplicate or out of order): ignored, never applied.
	LegEventsIgnored *prometheus.CounterVec // by state, event

	// Latencies, in seconds with millisecond-scale buckets.
	DialToOriginate   *prometheus.HistogramVec // by node: a dial request's start → its originate answered by the PBX
	OriginateToAnswer *prometheus.HistogramVec // by node: the leg written and dialed → the phone answered
	EventToStream     prometheus.Histogram     // an event appended (a PBX event applied, say) → written to a live event stream
	Commit            *prometheus.HistogramVec // by dialect: a write transaction's start → its commit
	// ProgressBatch: how many changes of call progress each PostgreSQL
	// transaction applied (storage.InTxLeg batches them).
	ProgressBatch prometheus.Histogram
}

// latencyBuckets are the buckets of the latency histograms: 0.25 ms to
// 10 s, about ×2.5 apart.
var latencyBuckets = []float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}

// answerBuckets: ringing takes seconds.
var answerBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60}

// NewMetrics makes the series and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		DialOuts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "dial_outs_total",
			Help: "Originate requests sent to a PBX, by node and result."}, []string{"node", "result"}),
		LegEnds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "leg_ends_total",
			Help: "Legs that reached an end state, by state."}, []string{"state"}),
		PBXEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "pbx_events_total",
			Help: "PBX events handled, by node and type."}, []string{"node", "type"}),
		Resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "pbx_resyncs_total",
			Help: "Reconciliations of the store with a PBX, by node and result."}, []string{"node", "result"}),
		ResyncFixes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "pbx_resync_fixes_total",
			Help: "Differences a resync repaired, by node and kind."}, []string{"node", "what"}),
		Conferences: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "convoice", Name: "conferences_started_total",
			Help: "Conferences started."}),
		WatchdogEnds: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "convoice", Name: "watchdog_leg_ends_total",
			Help: "Legs ended by convoice because the PBX said nothing past the ring timeout."}),
		NodeOwner: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "convoice", Name: "pbx_node_owner",
			Help: "1 while this replica holds the PBX node's lease (its event connection), else 0."}, []string{"node"}),
		NodeLost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "pbx_node_lost_leg_ends_total",
			Help: "Legs ended because their PBX node stayed unreachable past NodeLostAfter, by node."}, []string{"node"}),
		NodeHandovers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "pbx_node_handovers_total",
			Help: "Times this replica handed a PBX node's lease over because it could not reach the node and another replica could, by node."}, []string{"node"}),
		LegEventsIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "leg_events_ignored_total",
			Help: "Leg events the leg state table does not allow in the leg's state, ignored, by state and event."}, []string{"state", "event"}),
		DialToOriginate: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "convoice", Name: "dial_originate_seconds",
			Help: "From a dial's start (the request in the engine) to the PBX's answer to its originate, by node.", Buckets: latencyBuckets}, []string{"node"}),
		OriginateToAnswer: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "convoice", Name: "originate_answer_seconds",
			Help: "From a leg's originate to the phone answering, by node.", Buckets: answerBuckets}, []string{"node"}),
		EventToStream: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "convoice", Name: "event_stream_delay_seconds",
			Help: "From an event's append (e.g. a PBX event applied) to its write on a live event stream.", Buckets: latencyBuckets}),
		Commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "convoice", Name: "db_commit_seconds",
			Help:    "A write transaction from its start to its commit (SQLite: one batch of the writer, before its fsync), by dialect.",
			Buckets: latencyBuckets}, []string{"dialect"}),
		ProgressBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "convoice", Name: "db_progress_batch_changes",
			Help:    "PostgreSQL only: changes of the PBX's call progress (a leg's state) applied by one transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32}}),
	}
	if reg != nil {
		reg.MustRegister(m.DialOuts, m.LegEnds, m.PBXEvents, m.Resyncs, m.ResyncFixes, m.Conferences, m.WatchdogEnds,
			m.NodeOwner, m.NodeLost, m.NodeHandovers, m.LegEventsIgnored, m.DialToOriginate, m.OriginateToAnswer, m.EventToStream, m.Commit, m.ProgressBatch)
	}
	return m
}

// Metrics are the engine's series.
func (en *Engine) Metrics() *Metrics { return en.metrics }
