package node

import "time"

// WaitGapFills waits until no gap is being filled (tests: fills run off the
// delivery path).
func (n *Node) WaitGapFills() { n.fills.Wait() }

// SetClock replaces the node's clock of readiness (tests).
func (n *Node) SetClock(now func() time.Time) { n.now = now }
