package bench

import (
	"time"

	"github.com/parley-chat/parley/chatserver/config"
)

// Layout is a scenario's client side before it is split over workers.
type Layout struct {
	Endpoints              []string
	Secret                 string
	ChannelPrefix          string
	Rooms                  int
	Subscribers            int
	Publishers             int
	PublishFromSubscribers bool
	PayloadBytes           int
	SourceAddrs            int
	Workers                int
	ConnectConcurrency     int
	PublishConcurrency     int
	ConnectTimeout         time.Duration
}

// Split divides a layout into per-worker jobs: contiguous ranges of
// subscribers and publishers, as even as possible.
func Split(l Layout) []Job {
	n := max(l.Workers, 1)
	jobs := make([]Job, n)
	subFirst, pubFirst := 0, 0
	for w := range jobs {
		subs := l.Subscribers/n + btoi(w < l.Subscribers%n)
		pubs := l.Publishers/n + btoi(w < l.Publishers%n)
		jobs[w] = Job{
			Worker: w, Endpoints: l.Endpoints, Secret: l.Secret, ChannelPrefix: l.ChannelPrefix, Rooms: l.Rooms,
			First: subFirst, Count: subs, Publishers: pubs, PublisherFirst: pubFirst,
			PublishFromSubscribers: l.PublishFromSubscribers, PayloadBytes: l.PayloadBytes,
			SourceBase: 2, SourceAddrs: max(l.SourceAddrs, 1), ConnectConcurrency: l.ConnectConcurrency,
			PublishConcurrency: l.PublishConcurrency, ConnectTimeout: l.ConnectTimeout,
		}
		subFirst += subs
		pubFirst += pubs
	}
	return jobs
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// PublisherWeights shares a publish rate among jobs: by dedicated publishers,
// or by subscribers when subscribers publish.
func PublisherWeights(jobs []Job) []int {
	w := make([]int, len(jobs))
	for i, j := range jobs {
		if j.PublishFromSubscribers {
			w[i] = j.Count
		} else {
			w[i] = j.Publishers
		}
	}
	return w
}

// SubscribersOfRoom is how many of subscribers connections (room = i % rooms) are in room r.
func SubscribersOfRoom(r, rooms, subscribers int) int64 {
	return int64(subscribers/rooms + btoi(r < subscribers%rooms))
}

// ExpectedDeliveries is how many publications subscribers should receive in
// all, given the acknowledged publications per room: each reaches every
// subscriber of its room exactly once.
func ExpectedDeliveries(pubsPerRoom []int64, subscribers int) int64 {
	var n int64
	for r, p := range pubsPerRoom {
		n += p * SubscribersOfRoom(r, len(pubsPerRoom), subscribers)
	}
	return n
}

// Namespace is the one channel namespace both servers get in the benchmarks:
// history of 1,000 publications for ten minutes, recovery on, publishing by
// any authenticated connection (publishers need not subscribe), no presence
// or join/leave (neither server pays for them unless asked).
const Namespace = "room"

// ParleyBackends names the distributed backends of a Parley replica; nil
// means in-memory.
type ParleyBackends struct {
	BrokerURLFile, Exchange, ControlExchange string
	StoreURLFile                             string
}

// ParleyConfig is the Parley config the benchmarks run: the defaults but with
// the per-connection publish rate limit off (Centrifugo has none by default)
// and the bench namespace. address is the public listener (WebSocket),
// adminAddress the admin one (metrics, detailed readiness).
func ParleyConfig(address, adminAddress, keyFile string, b *ParleyBackends) config.Config {
	cfg := config.Default()
	cfg.HTTP.Address = address
	cfg.HTTP.AdminAddress = adminAddress
	cfg.HTTP.ShutdownGracePeriod = config.Duration(5 * time.Second)
	cfg.Auth = config.Auth{HMACSecretFiles: []string{keyFile}}
	cfg.Limits.PublishesPerSecond = 0
	cfg.Limits.CommandCostPerSecond, cfg.Limits.UserCommandCostPerSecond = 0, 0
	cfg.Web.Enabled = false
	cfg.Log = config.Log{Level: "warn", Format: "text"}
	cfg.Namespaces = []config.Namespace{{
		Name: Namespace, History: config.History{Size: 1000, TTL: config.Duration(10 * time.Minute)},
		Recovery: true, AllowPublish: config.PublishAuthenticated,
	}}
	if b != nil {
		cfg.Broker = config.Broker{Type: "amqp", URLFile: b.BrokerURLFile, Exchange: b.Exchange, ControlExchange: b.ControlExchange}
		cfg.Store.Type = "postgres"
		cfg.Store.URLFile = b.StoreURLFile
	}
	return cfg
}
