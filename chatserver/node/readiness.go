package node

// Readiness: what /readyz answers, and so whether the Service sends this
// replica new clients and whether a PodDisruptionBudget counts it.
//
// Ready means "this replica can serve its clients": it is not draining and
// its store answers. The broker is not a readiness input while an outage is
// shorter than broker.readinessGrace (default 5m): a publication is committed
// in the store before it is fanned out, the outbox re-sends what the broker
// did not take (outbox.go), and every replica fills gaps from the store, so a
// broker blip costs latency, not messages. The broker is shared: an outage
// of it is an outage of every replica, and turning them all unready would
// empty the Service (new connections fail everywhere) and block node drains
// through the PodDisruptionBudget without sending a single client somewhere
// better. Past the grace the replica does go unready: a link that stays down
// that long is more likely this replica's own (its network, its credentials)
// than a blip, and its clients are better served by a replica that has one.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// readinessCheckTimeout bounds the broker and store checks of one readiness
// probe (run side by side). It stays under the kubelet probe's timeout (2s,
// internal/resource), so a broker that does not answer is a failed broker
// check rather than a timed-out probe.
const readinessCheckTimeout = 1500 * time.Millisecond

// Readiness reports whether the node can serve its clients (err == nil) and,
// when it can, what is degraded (empty when nothing is): a broker outage
// still within broker.readinessGrace. It also sets the parley_ready,
// parley_broker_up and parley_store_up gauges.
func (n *Node) Readiness(ctx context.Context) (degraded string, err error) {
	if n.shuttingDown.Load() {
		n.metrics.Ready.Set(0)
		return "", errors.New("shutting down")
	}
	ctx, cancel := context.WithTimeout(ctx, readinessCheckTimeout)
	defer cancel()
	var brokerErr, storeErr error
	var wg sync.WaitGroup
	wg.Go(func() { brokerErr = n.broker.Ready(ctx) })
	wg.Go(func() { _, storeErr = n.store.Position(ctx, "__parley_readyz") })
	wg.Wait()
	n.metrics.BrokerUp.Set(up(brokerErr))
	n.metrics.StoreUp.Set(up(storeErr))

	down := n.brokerOutage(brokerErr != nil)
	switch grace := n.cfg.Broker.ReadinessGraceOrDefault(); {
	case storeErr != nil:
		err = fmt.Errorf("store: %w", storeErr)
	case brokerErr != nil && down >= grace:
		err = fmt.Errorf("broker: unreachable for %s, longer than broker.readinessGrace (%s): %w", roundOutage(down), grace, brokerErr)
	case brokerErr != nil:
		degraded = fmt.Sprintf("broker unreachable for %s (ready until broker.readinessGrace, %s; publications are committed and re-sent): %v",
			roundOutage(down), grace, brokerErr)
	}
	if err != nil {
		n.metrics.Ready.Set(0)
		return "", err
	}
	n.metrics.Ready.Set(1)
	return degraded, nil
}

// Ready is Readiness without the degraded note.
func (n *Node) Ready(ctx context.Context) error {
	_, err := n.Readiness(ctx)
	return err
}

// brokerOutage records whether the broker check failed and returns how long
// the current outage has lasted (zero when the broker is reachable). The
// outage starts at the first failed check, so it is measured from at most one
// probe period after the link went down.
func (n *Node) brokerOutage(failed bool) time.Duration {
	n.brokerDownMu.Lock()
	defer n.brokerDownMu.Unlock()
	now := n.now()
	switch {
	case !failed:
		n.brokerDown = time.Time{}
		return 0
	case n.brokerDown.IsZero():
		n.brokerDown = now
	}
	return now.Sub(n.brokerDown)
}

// roundOutage reads well in a message: milliseconds under a second, seconds after.
func roundOutage(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

func up(err error) float64 {
	if err != nil {
		return 0
	}
	return 1
}
