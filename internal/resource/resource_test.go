package resource

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/internal/naming"
)

// cluster returns a ChatCluster as the API server would store it for a
// minimal spec (the CRD's defaults applied), changed by the given functions.
func cluster(changes ...func(*v1alpha1.ChatCluster)) Cluster {
	cc := &v1alpha1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "team-chat", Namespace: "chat", Generation: 1},
		Spec: v1alpha1.ChatClusterSpec{
			Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi"),
			}},
			Auth: v1alpha1.AuthSpec{KeyRotationOverlap: &metav1.Duration{Duration: 24 * time.Hour}},
			Channels: []v1alpha1.ChannelSpec{{
				Name: "room", History: &v1alpha1.HistorySpec{Size: 1000, TTL: &metav1.Duration{Duration: 720 * time.Hour}},
				Presence: true, JoinLeave: true, Recovery: true, Typing: true,
				AllowPublish: "subscribers", AllowSubscribe: "authenticated", AllowHistory: "subscribers", AllowPresence: "subscribers",
			}},
			Limits: v1alpha1.LimitsSpec{
				MaxMessageBytes: 65536, PublishesPerSecond: ptrTo[int32](20), ConnectionsPerUser: ptrTo[int32](10),
				SubscriptionsPerConnection: ptrTo[int32](128), WriteQueueBytes: 1 << 20,
			},
			Service:      v1alpha1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
			Monitoring:   v1alpha1.MonitoringSpec{ServiceMonitor: v1alpha1.ServiceMonitorSpec{Enabled: ptrTo(true), Interval: &metav1.Duration{Duration: 30 * time.Second}}},
			WebClient:    v1alpha1.WebClientSpec{Enabled: ptrTo(true)},
			Logging:      v1alpha1.LoggingSpec{Level: "info", Format: "json"},
			DrainTimeout: &metav1.Duration{Duration: 25 * time.Second},
		},
	}
	for _, f := range changes {
		f(cc)
	}
	return Cluster{ChatCluster: cc, DefaultImage: "example.org/parley:1.0", ClusterDomain: "cluster.local"}
}

func withBrokerAndDatabase(cc *v1alpha1.ChatCluster) {
	cc.Spec.Replicas = ptrTo[int32](3)
	cc.Spec.Broker = &v1alpha1.BrokerSpec{SecretRef: &v1alpha1.SecretKeyReference{Name: "rabbitmq-admin", Key: "uri"}, DeletionPolicy: v1alpha1.DeletionPolicyDelete}
	cc.Spec.Database = &v1alpha1.DatabaseSpec{AdminSecretRef: &v1alpha1.SecretKeyReference{Name: "postgres-admin", Key: "uri"}, ReclaimPolicy: v1alpha1.DeletionPolicyRetain, MaxConnections: 10}
}

func withAutoscaling(cc *v1alpha1.ChatCluster) {
	withBrokerAndDatabase(cc)
	cc.Spec.Replicas = nil
	cc.Spec.Autoscaling = &v1alpha1.AutoscalingSpec{
		MinReplicas: ptrTo[int32](2), MaxReplicas: 20, TargetCPUUtilizationPercentage: ptrTo[int32](70),
		ScaleDownStabilizationWindow: &metav1.Duration{Duration: 5 * time.Minute},
	}
}

func withTLS(cc *v1alpha1.ChatCluster) { cc.Spec.TLS = &v1alpha1.TLSSpec{SecretName: "chat-tls"} }

func desiredDeployment(t testing.TB, c Cluster) *appsv1.Deployment {
	t.Helper()
	d, err := (&DeploymentBuilder{c}).Desired()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func updated[T Object](t testing.TB, b ResourceBuilder, live T) T {
	t.Helper()
	if err := b.Update(live); err != nil {
		t.Fatal(err)
	}
	return live
}

func TestRenderedConfigLoadsInTheChatServer(t *testing.T) {
	for name, c := range map[string]Cluster{
		"single replica, in-memory":    cluster(),
		"broker and provisioned db":    cluster(withBrokerAndDatabase),
		"autoscaled, TLS, anonymous":   cluster(withAutoscaling, withTLS, func(cc *v1alpha1.ChatCluster) { cc.Spec.Auth.AllowAnonymous = true }),
		"existing database, two kinds": cluster(withBrokerAndDatabase, existingDatabase, twoChannelKinds),
		"text logs, no web client, jwks": cluster(func(cc *v1alpha1.ChatCluster) {
			cc.Spec.Logging = v1alpha1.LoggingSpec{Level: "debug", Format: "text"}
			cc.Spec.WebClient.Enabled = ptrTo(false)
			cc.Spec.Auth.JWKSURL = "https://idp.example.org/jwks"
		}),
	} {
		t.Run(name, func(t *testing.T) {
			cm := updated(t, &ConfigMapBuilder{c}, &corev1.ConfigMap{})
			cfg, err := config.Parse([]byte(cm.Data[ConfigKey]))
			if err != nil {
				t.Fatalf("the chat server refuses the rendered config: %v\n%s", err, cm.Data[ConfigKey])
			}
			if want := RenderConfig(c); !equality.Semantic.DeepEqual(cfg, want) {
				t.Errorf("config changed in the round trip:\n got %+v\nwant %+v", cfg, want)
			}
			if cfg.HTTP.Address != ":8000" || cfg.HTTP.AdminAddress != ":8001" || cfg.HTTP.APIKeyFile != "" {
				t.Errorf("http = %+v", cfg.HTTP)
			}
			// Both keys of <name>-api-key: the previous one is accepted during a rotation.
			if !slices.Equal(cfg.HTTP.APIKeyFiles, []string{"/etc/parley/api/api-key", "/etc/parley/api/api-key-previous"}) {
				t.Errorf("apiKeyFiles = %v", cfg.HTTP.APIKeyFiles)
			}
			if !slices.Equal(cfg.Auth.HMACSecretFiles, []string{"/etc/parley/jwt/current", "/etc/parley/jwt/previous"}) {
				t.Errorf("hmacSecretFiles = %v", cfg.Auth.HMACSecretFiles)
			}
			if len(cfg.Namespaces) != len(c.Spec.Channels) {
				t.Errorf("namespaces = %+v, want one per channel kind", cfg.Namespaces)
			}
		})
	}
}

func existingDatabase(cc *v1alpha1.ChatCluster) {
	cc.Spec.Database.AdminSecretRef = nil
	cc.Spec.Database.SecretRef = &v1alpha1.SecretKeyReference{Name: "chat-db", Key: "url"}
}

func twoChannelKinds(cc *v1alpha1.ChatCluster) {
	cc.Spec.Channels = append(cc.Spec.Channels, v1alpha1.ChannelSpec{
		Name: "dm", Personal: true, AllowPublish: "authenticated", AllowSubscribe: "token", AllowHistory: "subscribers", AllowPresence: "subscribers",
	})
}

func TestConfigNamesTheBrokerStoreAndSecretFiles(t *testing.T) {
	cfg := RenderConfig(cluster(withBrokerAndDatabase, withTLS))
	want := config.Broker{Type: "amqp", URLFile: "/etc/parley/broker/uri",
		Exchange: "parley.chat.team-chat.pub", ControlExchange: "parley.chat.team-chat.control",
		DeadLetterExchange: "parley.chat.team-chat.dlx"}
	if cfg.Broker != want {
		t.Errorf("broker = %+v, want %+v", cfg.Broker, want)
	}
	if cfg.Store.Type != "postgres" || cfg.Store.URLFile != "/etc/parley/db/uri" || cfg.Store.MaxConns != 10 {
		t.Errorf("store = %+v", cfg.Store)
	}
	if cfg.HTTP.TLS == nil || cfg.HTTP.TLS.CertFile != "/etc/parley/tls/tls.crt" || cfg.HTTP.TLS.KeyFile != "/etc/parley/tls/tls.key" {
		t.Errorf("tls = %+v", cfg.HTTP.TLS)
	}
	if cfg.HTTP.ShutdownGracePeriod.D() != 25*time.Second {
		t.Errorf("shutdownGracePeriod = %v, want the drain timeout", cfg.HTTP.ShutdownGracePeriod.D())
	}
	mem := RenderConfig(cluster())
	if mem.Broker.Type != "memory" || mem.Store.Type != "memory" || mem.Store.URLFile != "" {
		t.Errorf("without broker and database: broker %+v store %+v", mem.Broker, mem.Store)
	}
}

func TestDeploymentPodsAreLockedDown(t *testing.T) {
	d := desiredDeployment(t, cluster(withBrokerAndDatabase))
	pod := d.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc == nil || !*psc.RunAsNonRoot || *psc.RunAsUser == 0 || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context = %+v", psc)
	}
	if *pod.AutomountServiceAccountToken || pod.ServiceAccountName != "team-chat" {
		t.Errorf("service account %q, automount %v", pod.ServiceAccountName, *pod.AutomountServiceAccountToken)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("containers = %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || !*sc.RunAsNonRoot || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context = %+v", sc)
	}
	if c.Image != "example.org/parley:1.0" || !slices.Equal(c.Command, []string{"/chatserver", "--config=/etc/parley/config/config.json"}) {
		t.Errorf("image %q command %v", c.Image, c.Command)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.StartupProbe == nil {
		t.Errorf("probes: readiness %+v liveness %+v", c.ReadinessProbe, c.LivenessProbe)
	}
	if c.Lifecycle.PreStop.Sleep == nil || *pod.TerminationGracePeriodSeconds != 35 {
		t.Errorf("preStop %+v, grace %d (want 5s pause + 25s drain + 5s)", c.Lifecycle.PreStop, *pod.TerminationGracePeriodSeconds)
	}
	var keys []string
	for _, s := range pod.TopologySpreadConstraints {
		keys = append(keys, s.TopologyKey)
	}
	if !slices.Equal(keys, []string{corev1.LabelHostname, corev1.LabelTopologyZone}) {
		t.Errorf("spread over %v, want nodes and zones", keys)
	}
	if s := d.Spec.Strategy.RollingUpdate; s.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rollout may take capacity away: %+v", s)
	}
}

func TestDeploymentMountsTheSecretsTheConfigNames(t *testing.T) {
	volume := func(d *appsv1.Deployment, name string) *corev1.Volume {
		for i, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == name {
				return &d.Spec.Template.Spec.Volumes[i]
			}
		}
		return nil
	}
	d := desiredDeployment(t, cluster(withBrokerAndDatabase, withTLS))
	for vol, secret := range map[string]string{"jwt": "team-chat-jwt", "api-key": "team-chat-api-key", "broker": "rabbitmq-admin", "database": "team-chat-db", "tls": "chat-tls"} {
		v := volume(d, vol)
		if v == nil || v.Secret == nil || v.Secret.SecretName != secret {
			t.Errorf("volume %s = %+v, want Secret %s", vol, v, secret)
			continue
		}
		if *v.Secret.DefaultMode != 0o440 {
			t.Errorf("volume %s mode %o", vol, *v.Secret.DefaultMode)
		}
	}
	if items := volume(d, "broker").Secret.Items; len(items) != 1 || items[0].Key != "uri" || items[0].Path != "uri" {
		t.Errorf("broker items = %+v", items)
	}
	existing := desiredDeployment(t, cluster(withBrokerAndDatabase, existingDatabase))
	if v := volume(existing, "database"); v.Secret.SecretName != "chat-db" || v.Secret.Items[0].Key != "url" || v.Secret.Items[0].Path != "uri" {
		t.Errorf("existing database volume = %+v", v.Secret)
	}
	mounts := map[string]string{}
	for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	want := map[string]string{"config": ConfigDir, "jwt": JWTDir, "api-key": APIKeyDir, "broker": BrokerDir, "database": DatabaseDir, "tls": TLSDir, "tmp": "/tmp"}
	if !equality.Semantic.DeepEqual(mounts, want) {
		t.Errorf("mounts = %v, want %v", mounts, want)
	}
	if memory := desiredDeployment(t, cluster()); volume(memory, "broker") != nil || volume(memory, "database") != nil {
		t.Error("a cluster without broker and database mounts their Secrets")
	}
}

func TestPodsRollOnlyOnARealChange(t *testing.T) {
	hash := func(c Cluster) string {
		return desiredDeployment(t, c).Spec.Template.Annotations[AnnotationConfigHash]
	}
	base := hash(cluster(withBrokerAndDatabase))
	same := map[string]func(*v1alpha1.ChatCluster){
		"more replicas":       func(cc *v1alpha1.ChatCluster) { cc.Spec.Replicas = ptrTo[int32](7) },
		"service annotations": func(cc *v1alpha1.ChatCluster) { cc.Spec.Service.Annotations = map[string]string{"a": "b"} },
		"an ingress":          func(cc *v1alpha1.ChatCluster) { cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org"} },
		"a new generation":    func(cc *v1alpha1.ChatCluster) { cc.Generation = 9 },
	}
	for name, f := range same {
		if got := hash(cluster(withBrokerAndDatabase, f)); got != base {
			t.Errorf("%s changed the config hash", name)
		}
	}
	differ := map[string]func(*v1alpha1.ChatCluster){
		"a limit":        func(cc *v1alpha1.ChatCluster) { cc.Spec.Limits.MaxMessageBytes = 1024 },
		"a channel rule": func(cc *v1alpha1.ChatCluster) { cc.Spec.Channels[0].Presence = false },
		"anonymous":      func(cc *v1alpha1.ChatCluster) { cc.Spec.Auth.AllowAnonymous = true },
	}
	for name, f := range differ {
		if got := hash(cluster(withBrokerAndDatabase, f)); got == base {
			t.Errorf("%s did not change the config hash", name)
		}
	}
	c := cluster(withBrokerAndDatabase)
	c.SecretsHash = "other"
	if hash(c) == base {
		t.Error("a changed broker or database Secret did not change the config hash")
	}
}

func TestSecretsHashCoversOnlyWhatTheServerReadsAtStart(t *testing.T) {
	refs := SecretReferences(cluster(withBrokerAndDatabase))
	data := map[string]map[string][]byte{
		"team-chat-jwt":     {"current": []byte("k1")},
		"team-chat-api-key": {"api-key": []byte("a1")},
		"rabbitmq-admin":    {"uri": []byte("amqp://u:p@rabbit/")},
		"team-chat-db":      {"uri": []byte("postgres://u:p@db/chat")},
	}
	base := SecretsHash(refs, data)
	data["team-chat-jwt"]["current"] = []byte("k2") // rotated: the server reloads it
	data["team-chat-api-key"]["api-key"] = []byte("a2")
	if SecretsHash(refs, data) != base {
		t.Error("rotating the JWT or API key would restart every chat server")
	}
	data["rabbitmq-admin"]["uri"] = []byte("amqp://u:other@rabbit/")
	if SecretsHash(refs, data) == base {
		t.Error("a new broker URI does not roll the pods")
	}
	delete(data, "team-chat-db")
	if SecretsHash(refs, data) == SecretsHash(refs, map[string]map[string][]byte{"team-chat-db": {"uri": nil}}) {
		t.Error("a missing Secret hashes like an empty one")
	}
	names := ReferencedSecretNames(cluster(withBrokerAndDatabase))
	if !slices.Equal(names, []string{"postgres-admin", "rabbitmq-admin", "team-chat-api-key", "team-chat-db", "team-chat-jwt"}) {
		t.Errorf("referenced Secrets = %v", names)
	}
}

// serverDefaulted imitates what the API server does to a stored template.
func serverDefaulted(d *appsv1.Deployment) *appsv1.Deployment {
	d = d.DeepCopy()
	p := &d.Spec.Template.Spec
	p.RestartPolicy, p.DNSPolicy, p.SchedulerName = corev1.RestartPolicyAlways, corev1.DNSClusterFirst, corev1.DefaultSchedulerName
	for i := range p.Containers {
		p.Containers[i].TerminationMessagePath = "/dev/termination-log"
		p.Containers[i].ImagePullPolicy = corev1.PullIfNotPresent
	}
	d.Spec.ProgressDeadlineSeconds = ptrTo[int32](600)
	return d
}

func TestDeploymentUpdateKeepsDefaultsAndOthersFields(t *testing.T) {
	c := cluster(withAutoscaling)
	b := &DeploymentBuilder{c}
	first := updated(t, b, &appsv1.Deployment{})
	if *first.Spec.Replicas != 2 {
		t.Errorf("a new autoscaled Deployment starts with %d replicas, want minReplicas 2", *first.Spec.Replicas)
	}
	live := serverDefaulted(first)
	live.Spec.Replicas = ptrTo[int32](7) // the HPA's choice
	live.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = "2026-01-01T00:00:00Z"
	before := live.DeepCopy()
	updated(t, b, live)
	if !equality.Semantic.DeepEqual(before, live) {
		t.Errorf("an unchanged spec changed the Deployment:\n%s", diff(before, live))
	}

	live.Spec.Template.Spec.Containers[0].Image = "someone/else:latest"
	updated(t, b, live)
	if got := live.Spec.Template.Spec.Containers[0].Image; got != "example.org/parley:1.0" {
		t.Errorf("a hand-edited image stayed: %s", got)
	}

	manual := cluster(withBrokerAndDatabase)
	live = serverDefaulted(updated(t, &DeploymentBuilder{manual}, &appsv1.Deployment{}))
	live.Spec.Replicas = ptrTo[int32](9)
	updated(t, &DeploymentBuilder{manual}, live)
	if *live.Spec.Replicas != 3 {
		t.Errorf("without autoscaling replicas = %d, want spec.replicas 3", *live.Spec.Replicas)
	}
}

func TestDeploymentTemplateFollowsARemovedField(t *testing.T) {
	withNodeSelector := cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Pod.NodeSelector = map[string]string{"pool": "chat"} })
	live := serverDefaulted(updated(t, &DeploymentBuilder{withNodeSelector}, &appsv1.Deployment{}))
	updated(t, &DeploymentBuilder{cluster()}, live)
	if len(live.Spec.Template.Spec.NodeSelector) != 0 {
		t.Errorf("node selector removed from the spec stayed: %v", live.Spec.Template.Spec.NodeSelector)
	}
}

func TestOverridePatchesTheDeployment(t *testing.T) {
	o, err := v1alpha1.NewDeploymentOverride([]byte(`{"spec":{"minReadySeconds":30,"template":{"spec":{
		"containers":[{"name":"chatserver","env":[{"name":"GODEBUG","value":"madvdontneed=1"}]},
		              ` + restrictedSidecar + `]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	d := desiredDeployment(t, cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Override = &v1alpha1.OverrideSpec{Deployment: o} }))
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 2 || cs[0].Name != "chatserver" || len(cs[0].Env) != 1 || cs[0].Env[0].Name != "GODEBUG" || cs[1].Image != "example.org/sidecar:1" {
		t.Errorf("containers after the patch: %+v", cs)
	}
	if cs[0].Image != "example.org/parley:1.0" || cs[0].SecurityContext == nil || !*cs[0].SecurityContext.ReadOnlyRootFilesystem {
		t.Error("the patch lost the chat server's own fields")
	}
	if d.Spec.MinReadySeconds != 30 {
		t.Errorf("minReadySeconds = %d", d.Spec.MinReadySeconds)
	}
}

func TestOverrideKeepsFieldsOutsideTheTypedSubset(t *testing.T) {
	raw := `{"spec":{"template":{"metadata":{"annotations":{"x":"y"}},"spec":{"dnsPolicy":"None"}}}}`
	o, err := v1alpha1.NewDeploymentOverride([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	cc := &v1alpha1.ChatCluster{Spec: v1alpha1.ChatClusterSpec{Override: &v1alpha1.OverrideSpec{Deployment: o}}}
	b, err := json.Marshal(cc.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	var back v1alpha1.ChatCluster
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, _ := back.Spec.Override.Deployment.Raw()
	if string(got) != raw {
		t.Errorf("round trip lost the patch:\n got %s\nwant %s", got, raw)
	}
}

func TestServiceKeepsWhatTheAPIServerAllocated(t *testing.T) {
	lb := cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Service = v1alpha1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Annotations: map[string]string{"lb/internal": "true"}}
	})
	svc := updated(t, &ServiceBuilder{lb}, &corev1.Service{})
	if p := svc.Spec.Ports[0]; p.Port != 80 || p.TargetPort.IntValue() != 8000 || *p.AppProtocol != "kubernetes.io/ws" {
		t.Errorf("port = %+v", p)
	}
	svc.Spec.ClusterIP = "10.0.0.7"
	svc.Spec.Ports[0].NodePort = 31000
	svc.Annotations["cloud/assigned"] = "x"
	before := svc.DeepCopy()
	updated(t, &ServiceBuilder{lb}, svc)
	if !equality.Semantic.DeepEqual(before, svc) {
		t.Errorf("an unchanged spec changed the Service:\n%s", diff(before, svc))
	}

	plain := cluster()
	updated(t, &ServiceBuilder{plain}, svc)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.Ports[0].NodePort != 0 {
		t.Errorf("back to ClusterIP: %+v", svc.Spec)
	}
	if _, ok := svc.Annotations["lb/internal"]; ok {
		t.Error("an annotation removed from the spec stayed")
	}
	if svc.Annotations["cloud/assigned"] != "x" {
		t.Error("an annotation someone else wrote was removed")
	}
	if tls := updated(t, &ServiceBuilder{cluster(withTLS)}, &corev1.Service{}); tls.Spec.Ports[0].Port != 443 || tls.Spec.Ports[0].Name != "https" {
		t.Errorf("TLS port = %+v", tls.Spec.Ports[0])
	}
}

func TestHPAScalesOnCPUAndConnectionsAndDownSlowly(t *testing.T) {
	c := cluster(withAutoscaling, func(cc *v1alpha1.ChatCluster) { cc.Spec.Autoscaling.TargetConnectionsPerPod = ptrTo[int32](5000) })
	b := &HPABuilder{c}
	if !b.Wanted() || (&HPABuilder{cluster()}).Wanted() {
		t.Error("the HPA must exist exactly when autoscaling is on")
	}
	hpa := updated(t, b, &autoscalingv2.HorizontalPodAutoscaler{})
	s := hpa.Spec
	if s.ScaleTargetRef.Name != "team-chat" || *s.MinReplicas != 2 || s.MaxReplicas != 20 || len(s.Metrics) != 2 {
		t.Fatalf("spec = %+v", s)
	}
	if m := s.Metrics[0].Resource; m.Name != corev1.ResourceCPU || *m.Target.AverageUtilization != 70 {
		t.Errorf("cpu metric = %+v", m)
	}
	if m := s.Metrics[1].Pods; m.Metric.Name != "parley_connections" || m.Target.AverageValue.Value() != 5000 {
		t.Errorf("connections metric = %+v", m)
	}
	if down := s.Behavior.ScaleDown; *down.StabilizationWindowSeconds != 300 || down.Policies[0].Value != 1 {
		t.Errorf("scale down = %+v", down)
	}
}

func TestPDBDefaultsToOneUnavailable(t *testing.T) {
	pdb := updated(t, &PDBBuilder{cluster()}, &policyv1.PodDisruptionBudget{})
	if pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("default budget = %+v", pdb.Spec)
	}
	min := intstr.FromString("50%")
	c := cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{MinAvailable: &min}
	})
	updated(t, &PDBBuilder{c}, pdb)
	if pdb.Spec.MaxUnavailable != nil || pdb.Spec.MinAvailable.String() != "50%" {
		t.Errorf("minAvailable budget = %+v", pdb.Spec)
	}
	off := cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.PodDisruptionBudget = &v1alpha1.PodDisruptionBudgetSpec{Enabled: ptrTo(false)}
	})
	if (&PDBBuilder{off}).Wanted() {
		t.Error("a disabled budget is still wanted")
	}
}

func TestIngressNetworkPolicyAndServiceMonitor(t *testing.T) {
	c := cluster(withTLS, func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org", ClassName: ptrTo("nginx"), TLSSecretName: "chat-tls", Path: "/"}
		cc.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true, AllowedFrom: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ingress": "true"}},
		}}}
	})
	c.ServiceMonitorAvailable = true
	ing := updated(t, &IngressBuilder{c}, &networkingv1.Ingress{})
	if r := ing.Spec.Rules[0]; r.Host != "chat.example.org" || r.HTTP.Paths[0].Backend.Service.Port.Name != "https" || ing.Spec.TLS[0].SecretName != "chat-tls" {
		t.Errorf("ingress = %+v", ing.Spec)
	}
	np := updated(t, &NetworkPolicyBuilder{c}, &networkingv1.NetworkPolicy{})
	if r := np.Spec.Ingress[0]; r.Ports[0].Port.IntValue() != 8000 || len(r.From) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Errorf("network policy = %+v", np.Spec)
	}
	smb := &ServiceMonitorBuilder{c}
	obj, _ := smb.Build()
	sm := updated(t, smb, obj.(*unstructured.Unstructured))
	ep := sm.Object["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)
	if ep["port"] != "admin" || ep["scheme"] != "https" || ep["path"] != "/metrics" || ep["interval"] != "30s" {
		t.Errorf("endpoint = %v", ep)
	}
	before := sm.DeepCopy()
	updated(t, smb, sm)
	if !equality.Semantic.DeepEqual(before, sm) {
		t.Error("an unchanged spec changed the ServiceMonitor")
	}
	c.ServiceMonitorAvailable = false
	if (&ServiceMonitorBuilder{c}).Wanted() || (&IngressBuilder{cluster()}).Wanted() || (&NetworkPolicyBuilder{cluster()}).Wanted() {
		t.Error("optional children wanted without being asked for")
	}
}

func TestEndpoints(t *testing.T) {
	for want, c := range map[string]Cluster{
		"ws://team-chat.chat.svc.cluster.local/connection/websocket":      cluster(),
		"wss://team-chat.chat.svc.cluster.local/connection/websocket":     cluster(withTLS),
		"ws://team-chat.chat.svc.cluster.local:8080/connection/websocket": cluster(func(cc *v1alpha1.ChatCluster) { cc.Spec.Service.Port = ptrTo[int32](8080) }),
	} {
		if got := c.Endpoint(); got != want {
			t.Errorf("Endpoint() = %s, want %s", got, want)
		}
	}
	c := cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org", TLSSecretName: "t", Path: "/chat/"}
	})
	if got := c.ExternalEndpoint(); got != "wss://chat.example.org/chat/connection/websocket" {
		t.Errorf("ExternalEndpoint() = %s", got)
	}
}

func TestEveryChildIsLabelledAndNamedByOneHelper(t *testing.T) {
	c := cluster(withAutoscaling, withTLS, func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org", StreamAnnotations: map[string]string{"a": "b"}}
		cc.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
	})
	c.ServiceMonitorAvailable = true
	for _, b := range Builders(c) {
		obj, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		name := obj.GetName()
		if err := b.Update(obj); err != nil {
			t.Fatalf("%T: %v", b, err)
		}
		if obj.GetNamespace() != "chat" || (name != "team-chat" && name != naming.ConfigMapName("team-chat") && name != naming.StreamsIngressName("team-chat")) {
			t.Errorf("%T named %s/%s", b, obj.GetNamespace(), name)
		}
		if obj.GetLabels()[naming.LabelPartOf] != naming.PartOf || obj.GetLabels()[naming.LabelInstance] != "team-chat" {
			t.Errorf("%T labels = %v", b, obj.GetLabels())
		}
	}
}

func diff(a, b any) string {
	ja, _ := json.MarshalIndent(a, "", " ")
	jb, _ := json.MarshalIndent(b, "", " ")
	al, bl := strings.Split(string(ja), "\n"), strings.Split(string(jb), "\n")
	var out []string
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, "- "+x, "+ "+y)
		}
	}
	return strings.Join(out, "\n")
}

func BenchmarkBuildAllChildren(b *testing.B) {
	c := cluster(withAutoscaling, withTLS, func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Ingress = &v1alpha1.IngressSpec{Host: "chat.example.org"}
		cc.Spec.NetworkPolicy = &v1alpha1.NetworkPolicySpec{Enabled: true}
	})
	c.ServiceMonitorAvailable = true
	b.ReportAllocs()
	for b.Loop() {
		for _, rb := range Builders(c) {
			obj, _ := rb.Build()
			if err := rb.Update(obj); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkUnchangedDeployment is the cost of a no-op pass over the Deployment.
func BenchmarkUnchangedDeployment(b *testing.B) {
	c := cluster(withAutoscaling)
	db := &DeploymentBuilder{c}
	live := &appsv1.Deployment{}
	if err := db.Update(live); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := db.Update(live); err != nil {
			b.Fatal(err)
		}
	}
}

// A backend that verifies TLS: the chat servers trust its CA, mounted beside
// each URI from the cluster's own credentials Secrets.
func TestBackendCAIsMountedAndNamedInTheConfig(t *testing.T) {
	c := cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Broker = &v1alpha1.BrokerSpec{Backend: "shared-rabbitmq"}
		cc.Spec.Database = &v1alpha1.DatabaseSpec{Backend: "shared-postgres"}
	})
	if got := RenderConfig(c).Broker.CAFile; got != "" {
		t.Errorf("broker.caFile = %q without a CA", got)
	}
	c.BrokerCA, c.DatabaseCA = true, true
	if got := RenderConfig(c).Broker.CAFile; got != BrokerDir+"/"+CAFile {
		t.Errorf("broker.caFile = %q, want %s", got, BrokerDir+"/"+CAFile)
	}
	d, err := (&DeploymentBuilder{c}).Desired()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"broker": naming.BrokerSecretName("team-chat"), "database": naming.DatabaseSecretName("team-chat")}
	for _, v := range d.Spec.Template.Spec.Volumes {
		name, ok := want[v.Name]
		if !ok {
			continue
		}
		delete(want, v.Name)
		if v.Secret == nil || v.Secret.SecretName != name {
			t.Errorf("volume %s = %+v, want Secret %s", v.Name, v.VolumeSource, name)
			continue
		}
		var paths []string
		for _, it := range v.Secret.Items {
			paths = append(paths, it.Key+"→"+it.Path)
		}
		if got := strings.Join(paths, ","); got != "uri→uri,ca.crt→ca.crt" {
			t.Errorf("volume %s mounts %s", v.Name, got)
		}
	}
	if len(want) > 0 {
		t.Errorf("volumes missing: %v", want)
	}
}

// Channel kinds pass the chat server's per-namespace switches through.
func TestChannelSwitchesReachTheConfig(t *testing.T) {
	c := cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Auth.AllowAnonymous = true
		ch := &cc.Spec.Channels[0]
		ch.AllowAnonymous, ch.AllowAnonymousPublish, ch.AllowAnonymousPresence, ch.AllowBinary = true, true, true, true
		ch.AllowedDeltaTypes = []string{"fossil"}
	})
	data, err := RenderConfigJSON(c)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("the chat server refuses the config: %v", err)
	}
	ns := cfg.Namespaces[0]
	if !ns.AllowAnonymousPublish || !ns.AllowAnonymousPresence || !ns.AllowBinary || len(ns.AllowedDeltaTypes) != 1 {
		t.Errorf("namespace = %+v", ns)
	}
}
