package cluster

import (
	"fmt"
	"os/exec"
	"strings"
)

// createNodeNetwork makes the node's network namespace and its link to the
// host: the host end has HostIP, the node end NodeIP with a default route
// back through the host. The host routes the pod and Service ranges to the
// node, so tests on the host reach pod IPs and cluster IPs as a machine
// inside a cluster network would. Nothing is added to the host's iptables
// and the host's ip_forward is untouched: the node forwards, not the host.
func createNodeNetwork() error {
	host := fmt.Sprintf("%s/%d", HostIP, linkCIDR.Bits())
	node := fmt.Sprintf("%s/%d", NodeIP, linkCIDR.Bits())
	steps := [][]string{
		{"ip", "netns", "add", netnsName},
		{"ip", "link", "add", hostVeth, "type", "veth", "peer", "name", nodeVeth, "netns", netnsName},
		{"ip", "-n", netnsName, "link", "set", "lo", "up"},
		{"ip", "-n", netnsName, "addr", "add", node, "dev", nodeVeth},
		{"ip", "-n", netnsName, "link", "set", nodeVeth, "up"},
		{"ip", "-n", netnsName, "route", "add", "default", "via", HostIP.String(), "dev", nodeVeth},
		{"ip", "addr", "add", host, "dev", hostVeth},
		{"ip", "link", "set", hostVeth, "up"},
		{"ip", "route", "add", PodCIDR.String(), "via", NodeIP.String(), "dev", hostVeth},
		{"ip", "route", "add", ServiceCIDR.String(), "via", NodeIP.String(), "dev", hostVeth},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// inNode wraps a command line to run in the node's network namespace.
// nsenter --net changes only the network namespace: `ip netns exec` also
// makes a mount namespace and remounts /sys, which hides the cgroup mounts
// from containerd and the kubelet.
func inNode(argv ...string) []string {
	return append([]string{"nsenter", "--net=/run/netns/" + netnsName, "--"}, argv...)
}
