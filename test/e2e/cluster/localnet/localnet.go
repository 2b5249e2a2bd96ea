// Package localnet is the local cluster's addressing plan. Kubernetes refuses
// loopback addresses for pods' endpoints, so pods and Services get ordinary
// cluster addresses in 10.0.0.0/8, and every such address 10.a.b.c is
// reachable on this machine at the loopback address 127.a.b.c: the node agent
// listens there for pods, the service proxy for Services. No traffic ever
// leaves the loopback interface.
package localnet

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"net/netip"
)

// Plan is one local cluster's address blocks.
type Plan struct {
	// Pods is the /24 pod IPs are allocated from.
	Pods netip.Prefix
	// Services is the /24 the API server allocates Service cluster IPs from.
	Services netip.Prefix
}

// NewPlan picks two adjacent random /24 blocks (10.a.b.0/24 for pods,
// 10.a.b+1.0/24 for Services), so several local clusters on one machine
// (parallel test packages, a demo) do not collide. 10.0.0.0/16 is avoided
// because 127.0.0.0/16 holds the machine's own services.
func NewPlan() Plan {
	a := randInt(1, 254)
	b := randInt(0, 126) * 2
	return Plan{
		Pods:     netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(a), byte(b), 0}), 24),
		Services: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(a), byte(b + 1), 0}), 24),
	}
}

func randInt(lo, hi int64) int64 {
	n, err := rand.Int(rand.Reader, big.NewInt(hi-lo+1))
	if err != nil {
		panic(err)
	}
	return lo + n.Int64()
}

// Loopback maps a cluster address 10.a.b.c to the loopback address 127.a.b.c
// where it is reachable from this machine.
func Loopback(clusterIP netip.Addr) (netip.Addr, error) {
	if !clusterIP.Is4() || clusterIP.As4()[0] != 10 {
		return netip.Addr{}, fmt.Errorf("%s is not a local cluster address (10.0.0.0/8)", clusterIP)
	}
	b := clusterIP.As4()
	b[0] = 127
	return netip.AddrFrom4(b), nil
}

// LoopbackString is Loopback for a textual address.
func LoopbackString(clusterIP string) (string, error) {
	a, err := netip.ParseAddr(clusterIP)
	if err != nil {
		return "", err
	}
	l, err := Loopback(a)
	if err != nil {
		return "", err
	}
	return l.String(), nil
}
