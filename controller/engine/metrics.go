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
	// LegEventsIgnored counts events the leg table does not allow in the
	// leg's state (late, duplicate or out of order): ignored, never applied.
	LegEventsIgnored *prometheus.CounterVec // by state, event
}

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
		LegEventsIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "leg_events_ignored_total",
			Help: "Leg events the leg state table does not allow in the leg's state, ignored, by state and event."}, []string{"state", "event"}),
	}
	if reg != nil {
		reg.MustRegister(m.DialOuts, m.LegEnds, m.PBXEvents, m.Resyncs, m.ResyncFixes, m.Conferences, m.WatchdogEnds,
			m.NodeOwner, m.NodeLost, m.LegEventsIgnored)
	}
	return m
}
