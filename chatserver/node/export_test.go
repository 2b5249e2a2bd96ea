package node

// WaitGapFills waits until no gap is being filled (tests: fills run off the
// delivery path).
func (n *Node) WaitGapFills() { n.fills.Wait() }
