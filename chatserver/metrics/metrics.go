// Package metrics defines the chat server's Prometheus collectors. Each node
// owns its own registry so several nodes can live in one process (tests).
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of collectors one node updates.
type Metrics struct {
	Registry *prometheus.Registry

	Connections   prometheus.Gauge
	Subscriptions prometheus.Gauge
	MessagesIn    *prometheus.CounterVec // by frame type (command)
	MessagesOut   *prometheus.CounterVec // by kind (reply, push, ping)
	// OutPush, OutReply and OutPing are MessagesOut's children resolved once:
	// WithLabelValues hashes the label and takes a lock, which on the
	// per-delivery path costs more than the counter itself.
	OutPush, OutReply, OutPing prometheus.Counter
	BytesOut                   prometheus.Counter
	Errors                     *prometheus.CounterVec // protocol error replies by code
	Disconnects                *prometheus.CounterVec // by disconnect code
	MalformedFrames            prometheus.Counter
	PublishLatency             prometheus.Histogram // publish accepted by store → delivered by hub
	GapFills                   prometheus.Counter
	BroadcastReceivers         prometheus.Counter
	// Ready, BrokerUp and StoreUp are the last readiness check's answers
	// (1 or 0), set at each /readyz (the kubelet probes every 5s).
	Ready, BrokerUp, StoreUp prometheus.Gauge
	// BrokerPublishFailures counts committed publications the broker did not
	// take (kept in the outbox in a namespace with history).
	BrokerPublishFailures prometheus.Counter
	// DirectedSkipped counts committed publications no other replica was
	// registered for (directory routing): nothing went to the broker.
	DirectedSkipped prometheus.Counter
	// BrokerPacks counts the broker messages that carried several
	// publications to the same replicas (packs) and BrokerPacked the
	// publications in them: their ratio is how many publications one
	// broker message carries when publications pile up.
	BrokerPacks, BrokerPacked prometheus.Counter
	// OutboxUnsent is how many committed publications await re-sending, as
	// this node last read the store's outbox (at most one sweep's batch).
	OutboxUnsent prometheus.Gauge
	// PublishStage times the two waits on a stored publication's path before
	// its publisher is answered, so a latency gap can be split: "append" is
	// the store's commit (with any wait for the group commit in flight),
	// "broker" the broker's confirmed publish. "confirm" is the part of
	// "broker" from the publish of the message that carried it to RabbitMQ's
	// confirm, for sends to chosen replicas (broker.SendReporter): broker
	// minus confirm is the wait behind earlier messages to the same
	// replicas. AppendSeconds, BrokerPublishSeconds and ConfirmSeconds are
	// its children, resolved once.
	PublishStage                                        *prometheus.HistogramVec
	AppendSeconds, BrokerPublishSeconds, ConfirmSeconds prometheus.Observer
}

// New creates collectors registered in a fresh registry (with Go and process collectors).
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_connections", Help: "Open client connections (authenticated sessions).",
		}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_subscriptions", Help: "Active channel subscriptions on this node.",
		}),
		MessagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_messages_in_total", Help: "Commands received from clients, by command.",
		}, []string{"command"}),
		MessagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_messages_out_total", Help: "Replies and pushes queued to clients, by kind.",
		}, []string{"kind"}),
		BytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_bytes_out_total", Help: "Bytes written to client connections.",
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_errors_total", Help: "Protocol error replies, by error code.",
		}, []string{"code"}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_disconnects_total", Help: "Server-initiated disconnects, by disconnect code.",
		}, []string{"code"}),
		MalformedFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_malformed_frames_total", Help: "Frames that could not be decoded.",
		}),
		PublishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "parley_publish_deliver_latency_seconds",
			Help:    "Time from the store accepting a publication to the hub handing it to local subscribers.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		GapFills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_gap_fills_total", Help: "Offset gaps in broker delivery filled from the store.",
		}),
		BroadcastReceivers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_broadcast_receivers_total", Help: "Local subscribers a publication or join/leave was handed to.",
		}),
	}
	m.Ready = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_ready", Help: "1 when the last readiness check passed (the replica can serve its clients), else 0.",
	})
	m.BrokerUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_broker_up", Help: "1 when the last readiness check reached the broker (a probe made the round trip), else 0.",
	})
	m.StoreUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_store_up", Help: "1 when the last readiness check reached the store, else 0.",
	})
	m.BrokerPublishFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_broker_publish_failures_total", Help: "Committed publications the broker did not take (re-sent from the outbox where the namespace keeps history).",
	})
	m.DirectedSkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_directed_local_only_total", Help: "Committed publications of channels routed by the directory that no other replica had subscribers for: delivered here, nothing sent to the broker.",
	})
	m.BrokerPacks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_broker_packs_total", Help: "Broker messages that carried several publications to the same replicas (packs), sent when publications to them piled up behind unconfirmed ones.",
	})
	m.BrokerPacked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_broker_packed_publications_total", Help: "Publications that went to other replicas inside packs (the rest went one per broker message).",
	})
	m.OutboxUnsent = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_outbox_unsent", Help: "Committed publications not yet fanned out through the broker, as last read from the store's outbox (capped at one sweep's batch).",
	})
	m.PublishStage = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "parley_publish_stage_seconds",
		Help: "Time a stored publication spends in each stage before its publisher is answered: append (the store's commit), broker (the confirmed broker publish); confirm is the part of broker from the publish of the message that carried it (alone or in a pack) to its confirm.",
		// Sub-millisecond buckets: on a quiet system both stages are a few
		// hundred microseconds.
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"stage"})
	m.AppendSeconds = m.PublishStage.WithLabelValues("append")
	m.BrokerPublishSeconds = m.PublishStage.WithLabelValues("broker")
	m.ConfirmSeconds = m.PublishStage.WithLabelValues("confirm")
	m.OutPush = m.MessagesOut.WithLabelValues("push")
	m.OutReply = m.MessagesOut.WithLabelValues("reply")
	m.OutPing = m.MessagesOut.WithLabelValues("ping")
	r.MustRegister(m.Connections, m.Subscriptions, m.MessagesIn, m.MessagesOut, m.BytesOut, m.Errors,
		m.Disconnects, m.MalformedFrames, m.PublishLatency, m.GapFills, m.BroadcastReceivers,
		m.Ready, m.BrokerUp, m.StoreUp, m.BrokerPublishFailures, m.DirectedSkipped, m.BrokerPacks, m.BrokerPacked, m.OutboxUnsent, m.PublishStage,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// Sent records one message the broker had confirmed for a send to chosen
// replicas (broker.SendReporter): a pack when it carried several
// publications, and its confirm time once per publication, so that the
// confirm stage counts what the broker stage counts.
func (m *Metrics) Sent(publications int, confirm time.Duration) {
	if publications > 1 {
		m.BrokerPacks.Inc()
		m.BrokerPacked.Add(float64(publications))
	}
	s := confirm.Seconds()
	for range publications {
		m.ConfirmSeconds.Observe(s)
	}
}

// Error counts a protocol error reply.
func (m *Metrics) Error(code uint32) {
	m.Errors.WithLabelValues(strconv.FormatUint(uint64(code), 10)).Inc()
}

// Disconnect counts a server-initiated disconnect.
func (m *Metrics) Disconnect(code uint32) {
	m.Disconnects.WithLabelValues(strconv.FormatUint(uint64(code), 10)).Inc()
}
