package localnet

import (
	"net/netip"
	"testing"
)

func TestLoopbackMapsClusterAddresses(t *testing.T) {
	for in, want := range map[string]string{"10.1.2.3": "127.1.2.3", "10.255.0.254": "127.255.0.254"} {
		if got, err := LoopbackString(in); err != nil || got != want {
			t.Errorf("LoopbackString(%s) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"192.168.1.1", "127.0.0.1", "fd00::1", "nonsense"} {
		if _, err := LoopbackString(bad); err == nil {
			t.Errorf("LoopbackString(%s) accepted an address outside 10.0.0.0/8", bad)
		}
	}
}

func TestPlansAreAdjacentBlocksOutsideTheMachinesOwn(t *testing.T) {
	for range 200 {
		p := NewPlan()
		pods, svcs := p.Pods.Addr().As4(), p.Services.Addr().As4()
		if p.Pods.Bits() != 24 || p.Services.Bits() != 24 || pods[0] != 10 || pods[1] == 0 || pods[2]%2 != 0 ||
			svcs[1] != pods[1] || svcs[2] != pods[2]+1 {
			t.Fatalf("plan %+v", p)
		}
		if p.Pods.Overlaps(p.Services) || p.Pods.Contains(netip.MustParseAddr("10.0.0.1")) {
			t.Fatalf("plan %+v overlaps", p)
		}
	}
}
