package cluster

import "net/netip"

// The node's addressing. One local cluster runs per machine at a time (Start
// holds a machine-wide lock), so the plan is fixed: the blocks are private
// ranges this kind of machine does not use, and every address inside the
// node's network namespace (etcd on its loopback, the kubelet's ports) is
// invisible to the host's own services.
var (
	// HostIP is the host's end of the link to the node; the host services
	// (RabbitMQ, PostgreSQL) are reached by pods here, through HostProxy.
	HostIP = netip.MustParseAddr("10.250.0.1")
	// NodeIP is the node's address: the API server and the kubelet listen here.
	NodeIP = netip.MustParseAddr("10.250.0.10")
	// PodCIDR is the bridge CNI's pod network inside the node.
	PodCIDR = netip.MustParsePrefix("10.244.0.0/24")
	// ServiceCIDR is where Services get their cluster IPs; the host routes it
	// to the node, where kube-proxy translates it.
	ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	// KubernetesServiceIP is the first address of ServiceCIDR (the API server).
	KubernetesServiceIP = netip.MustParseAddr("10.96.0.1")
	// DNSServiceIP is CoreDNS's Service (the kubelet's clusterDNS).
	DNSServiceIP = netip.MustParseAddr("10.96.0.10")
	linkCIDR     = netip.MustParsePrefix("10.250.0.0/24")
)

const (
	// NodeName is the node's name in the API.
	NodeName = "parley-node"
	// netnsName is the node's network namespace (/run/netns/parley-node).
	netnsName = "parley-node"
	// hostVeth and nodeVeth are the two ends of the link (≤ 15 characters).
	hostVeth = "parley-h0"
	nodeVeth = "parley-n0"
	// bridgeName is the CNI bridge inside the node.
	bridgeName = "parley-br0"
	// ClusterDomain is the DNS suffix of Services.
	ClusterDomain = "cluster.local"
	apiServerPort = 6443
)
