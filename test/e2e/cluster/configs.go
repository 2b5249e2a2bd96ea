package cluster

import (
	"fmt"
	"os"
	"path/filepath"
)

// The node's configuration files, written under the state directory. Each
// setting that differs from a stock node says why: most are what this kind
// of machine needs (docs/local-cluster.md lists them).

// pauseImage is the pod sandbox image, built here (images.go).
const pauseImage = "registry.parley.local/pause:3.10"

func (c *Cluster) writeContainerdConfig() (string, error) {
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE (this kind of VM) runc cannot lower
  # oom_score_adj below its parent's: the sandbox's -998 would fail every pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[6]q
`, c.path("containerd", "root"), c.path("containerd", "state"), c.containerdSocket(), c.path("run", "containerd-ttrpc.sock"),
		pauseImage, c.path("cni", "net.d"))
	return c.write(cfg, "containerd", "config.toml")
}

func (c *Cluster) containerdSocket() string { return c.path("run", "containerd.sock") }

func (c *Cluster) writeCNIConfig() error {
	cfg := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "parley",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, bridgeName, PodCIDR.String(), c.path("cni", "ipam"))
	_, err := c.write(cfg, "cni", "net.d", "10-parley.conflist")
	return err
}

func (c *Cluster) writeKubeletConfig() (string, error) {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This kind of machine has cgroup v1 (hybrid): kubelet >= 1.35 refuses it
# unless told otherwise.
failCgroupV1: false
# containerd 1.6 cannot tell the kubelet its driver (no RuntimeConfig RPC).
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://%[1]s
imageServiceEndpoint: unix://%[1]s
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[3]s}
authorization:
  mode: Webhook
clusterDomain: %[4]s
clusterDNS: [%[5]s]
podLogsDir: %[6]s
resolvConf: /etc/resolv.conf
registerNode: true
staticPodPath: ""
# Images are imported, never pulled: never garbage-collect them away.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
# With true the kubelet refuses to start here (it wants kernel defaults the
# machine does not have); with false it rewrites them, and Stop restores them.
protectKernelDefaults: false
serializeImagePulls: false
# Quick reactions on one small machine; stock values are for fleets.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
shutdownGracePeriod: 0s
`, c.containerdSocket(), NodeIP, c.pki.path("ca.crt"), ClusterDomain, DNSServiceIP, c.path("logs", "pods"))
	return c.write(cfg, "kubelet", "config.yaml")
}

func (c *Cluster) writeKubeProxyConfig() (string, error) {
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
clusterCIDR: %s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
iptables:
  # Would set net.ipv4.conf.all.route_localnet, a host-wide sysctl.
  localhostNodePorts: false
# Leave the global conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.path("kube-proxy.kubeconfig"), NodeName, PodCIDR)
	return c.write(cfg, "kube-proxy.yaml")
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

func (c *Cluster) write(content string, elem ...string) (string, error) {
	p := c.path(elem...)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, []byte(content), 0o644)
}
