package v1alpha1_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/testenv"
)

// TestAPI runs the CRD the way users meet it: a real API server with the
// generated CRD installed, objects written as YAML.
func TestAPI(t *testing.T) {
	_, cfg := testenv.StartControlPlane(t)
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("InvalidSpecsAreRefusedNamingTheField", func(t *testing.T) { testInvalidSpecs(t, c) })
	t.Run("InvalidChangesAreRefused", func(t *testing.T) { testInvalidChanges(t, c) })
	t.Run("ValidSpecsAreAcceptedAndDefaulted", func(t *testing.T) { testDefaults(t, c) })
	t.Run("ShapeOfTheResource", func(t *testing.T) { testShape(t, c) })
	t.Run("ChatBackendSpecsAreValidated", func(t *testing.T) { testBackendSpecs(t, c) })
}

// object parses a ChatCluster written as users write it.
func object(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte("apiVersion: chat.parley.io/v1alpha1\nkind: ChatCluster\n"+doc), &u.Object); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, doc)
	}
	if u.GetNamespace() == "" {
		u.SetNamespace("default")
	}
	if u.GetName() == "" {
		u.SetName("chat")
	}
	return u
}

const (
	broker   = "\n  broker: {secretRef: {name: rabbitmq, key: uri}}"
	database = "\n  database: {adminSecretRef: {name: postgres, key: uri}}"
)

func override(podSpec string) string {
	return "spec:\n  override:\n    deployment:\n      spec:\n        template:\n          spec:\n" + podSpec
}

func testInvalidSpecs(t *testing.T, c client.Client) {
	for _, tc := range []struct {
		name, doc string
		want      []string // all must appear in the error
	}{
		{"several replicas without a broker", "spec:\n  replicas: 3" + database,
			[]string{"spec.broker", "spec.broker is required when spec.replicas > 1"}},
		{"several replicas without a database", "spec:\n  replicas: 3" + broker,
			[]string{"spec.database", "spec.database is required when spec.replicas > 1"}},
		{"autoscaling without a broker", "spec:\n  autoscaling: {maxReplicas: 5}" + database,
			[]string{"spec.broker is required when spec.replicas > 1 or spec.autoscaling is set"}},
		{"autoscaling min above max", "spec:\n  autoscaling: {minReplicas: 5, maxReplicas: 3}" + broker + database,
			[]string{"spec.autoscaling.minReplicas", "must not exceed spec.autoscaling.maxReplicas"}},
		{"an unknown default image policy", "spec:\n  defaultImagePolicy: Sometimes",
			[]string{"spec.defaultImagePolicy", `"Follow", "Hold"`}},
		{"autoscaling max of zero", "spec:\n  autoscaling: {maxReplicas: 0}" + broker + database,
			[]string{"spec.autoscaling.maxReplicas", "greater than or equal to 1"}},
		{"CPU target above 100%", "spec:\n  autoscaling: {maxReplicas: 4, targetCPUUtilizationPercentage: 150}" + broker + database,
			[]string{"spec.autoscaling.targetCPUUtilizationPercentage", "less than or equal to 100"}},
		{"scale-down window past an hour", "spec:\n  autoscaling: {maxReplicas: 4, scaleDownStabilizationWindow: 2h}" + broker + database,
			[]string{"spec.autoscaling.scaleDownStabilizationWindow must be between 0s and 1h"}},
		{"replicas above the bound", "spec:\n  replicas: 5000" + broker + database,
			[]string{"spec.replicas", "less than or equal to 1000"}},
		{"database with both refs", "spec:\n  database: {adminSecretRef: {name: a, key: uri}, secretRef: {name: b, key: uri}}",
			[]string{"spec.database", "set at most one of backend"}},
		{"database with a backend and a ref", "spec:\n  database: {backend: shared-pg, secretRef: {name: b, key: uri}}",
			[]string{"spec.database", "set at most one of backend"}},
		{"broker with a backend and a Secret", "spec:\n  broker: {backend: shared-rmq, secretRef: {name: b, key: uri}}",
			[]string{"spec.broker", "set at most one of backend and secretRef"}},
		{"backend name that is no name", "spec:\n  broker: {backend: Shared_RMQ}",
			[]string{"spec.broker.backend", "should match"}},
		{"unknown reclaim policy", "spec:\n  database: {adminSecretRef: {name: a, key: uri}, reclaimPolicy: Keep}",
			[]string{"spec.database.reclaimPolicy", `Unsupported value: "Keep"`}},
		{"broker Secret name that is no name", "spec:\n  broker: {secretRef: {name: Not_A_Name, key: uri}}",
			[]string{"spec.broker.secretRef.name", "should match"}},
		{"duplicate channel names", "spec:\n  channels: [{name: room}, {name: room}]",
			[]string{"spec.channels", "channel names must be unique"}},
		{"no channels at all", "spec:\n  channels: []",
			[]string{"spec.channels", "should have at least 1 items"}},
		{"channel name with a colon", "spec:\n  channels: [{name: 'a:b'}]",
			[]string{"spec.channels[0].name", "should match"}},
		{"recovery without history", "spec:\n  channels: [{name: room, recovery: true}]",
			[]string{"spec.channels[0].recovery", "recovery needs history.size > 0"}},
		{"history without ttl", "spec:\n  channels: [{name: room, history: {size: 10}}]",
			[]string{"spec.channels[0].history.ttl", "history.ttl is required when history.size > 0"}},
		{"history ttl of zero", "spec:\n  channels: [{name: room, history: {size: 10, ttl: 0s}}]",
			[]string{"spec.channels[0].history.ttl", "must be between 1s and 87600h"}},
		{"history ttl that is no duration", "spec:\n  channels: [{name: room, history: {size: 10, ttl: forever}}]",
			[]string{"spec.channels[0].history.ttl", "should match"}},
		{"anonymous publish without anonymous access", "spec:\n  channels: [{name: lobby, allowAnonymousPublish: true}]",
			[]string{"spec.channels[0].allowAnonymous", "must be true when allowAnonymousPublish"}},
		{"an unknown delta type", "spec:\n  channels: [{name: room, allowedDeltaTypes: [xdelta]}]",
			[]string{"spec.channels[0].allowedDeltaTypes[0]", "Unsupported value"}},
		{"two personal channels", "spec:\n  channels: [{name: me, personal: true}, {name: you, personal: true}]",
			[]string{"spec.channels", "at most one channel may be personal"}},
		{"personal channel without a name", "spec:\n  channels: [{name: '', personal: true}]",
			[]string{"spec.channels[0].personal", "personal needs a name"}},
		{"group channel that is personal", "spec:\n  channels: [{name: g, group: true, personal: true}]",
			[]string{"spec.channels[0].group", "group needs a name and cannot be personal"}},
		{"group channel open to anonymous users", "spec:\n  auth: {allowAnonymous: true}\n  channels: [{name: g, group: true, allowAnonymous: true}]",
			[]string{"spec.channels[0].allowAnonymous", "group admits members only"}},
		{"group channel with token subscribe", "spec:\n  channels: [{name: g, group: true, allowSubscribe: token}]",
			[]string{"spec.channels[0].allowSubscribe", "allowSubscribe cannot be token"}},
		{"groups with no members allowed", "spec:\n  groups: {membersPerGroup: 0}",
			[]string{"spec.groups.membersPerGroup", "should be greater than or equal to 1"}},
		{"groups search language that is no name", "spec:\n  groups: {searchLanguage: 'english; drop'}",
			[]string{"spec.groups.searchLanguage", "should match"}},
		{"JWKS over plain HTTP", "spec:\n  auth: {jwksURL: 'http://idp.example.org/jwks'}",
			[]string{"spec.auth.jwksURL", "must be an https:// URL"}},
		{"key rotation overlap of a second", "spec:\n  auth: {keyRotationOverlap: 1s}",
			[]string{"spec.auth.keyRotationOverlap must be between 1m and 720h"}},
		{"drain timeout of two hours", "spec:\n  drainTimeout: 2h",
			[]string{"spec.drainTimeout must be between 1s and 1h"}},
		{"tiny message limit", "spec:\n  limits: {maxMessageBytes: 100}",
			[]string{"spec.limits.maxMessageBytes", "greater than or equal to 256"}},
		{"ExternalName service", "spec:\n  service: {type: ExternalName}",
			[]string{"spec.service.type", `Unsupported value: "ExternalName"`}},
		{"service port on the admin port", "spec:\n  service: {port: 8001}",
			[]string{"spec.service.port", "8001 is the admin port"}},
		{"ingress host that is no host", "spec:\n  ingress: {host: 'chat example'}",
			[]string{"spec.ingress.host", "should match"}},
		{"both disruption budgets", "spec:\n  podDisruptionBudget: {maxUnavailable: 1, minAvailable: 1}",
			[]string{"spec.podDisruptionBudget", "set at most one of maxUnavailable and minAvailable"}},
		{"scrape interval of a second", "spec:\n  monitoring: {serviceMonitor: {interval: 1s}}",
			[]string{"spec.monitoring.serviceMonitor.interval must be between 5s and 10m"}},
		{"name too long for its children", "metadata: {name: a-chat-cluster-name-that-is-far-too-long-for-us}\nspec: {}",
			[]string{"metadata.name must be a DNS label of at most 45 characters"}},
		{"name with a dot", "metadata: {name: team.chat}\nspec: {}",
			[]string{"metadata.name must be a DNS label"}},
		{"override on the host network", override("            hostNetwork: true"),
			[]string{"spec.override.deployment.spec.template.spec.hostNetwork", "must not be true"}},
		{"override in the host PID namespace", override("            hostPID: true"),
			[]string{"spec.override.deployment.spec.template.spec.hostPID", "must not be true"}},
		{"override with a hostPath volume", override("            volumes: [{name: root, hostPath: {path: /}}]"),
			[]string{"spec.override.deployment.spec.template.spec.volumes", "must not use hostPath"}},
		{"override running the pod as root", override("            securityContext: {runAsUser: 0}"),
			[]string{"spec.override.deployment.spec.template.spec.securityContext.runAsUser", "must not be 0"}},
		{"override allowing root", override("            securityContext: {runAsNonRoot: false}"),
			[]string{"spec.override.deployment.spec.template.spec.securityContext.runAsNonRoot", "must not be false"}},
		{"override without seccomp", override("            securityContext: {seccompProfile: {type: Unconfined}}"),
			[]string{"spec.override.deployment.spec.template.spec.securityContext.seccompProfile", "must not be Unconfined"}},
		{"override with a privileged container", override("            containers: [{name: chatserver, securityContext: {privileged: true}}]"),
			[]string{"spec.override.deployment.spec.template.spec.containers[0].securityContext.privileged", "privileged must not be true"}},
		{"override with a privileged sidecar", override("            containers: [{name: chatserver}, {name: debug, image: busybox, securityContext: {privileged: true}}]"),
			[]string{"spec.override.deployment.spec.template.spec.containers[1].securityContext.privileged"}},
		{"override with a root init container", override("            initContainers: [{name: init, image: busybox, securityContext: {runAsUser: 0}}]"),
			[]string{"spec.override.deployment.spec.template.spec.initContainers[0].securityContext.runAsUser", "must not be 0"}},
		{"override escalating privileges", override("            containers: [{name: chatserver, securityContext: {allowPrivilegeEscalation: true}}]"),
			[]string{"allowPrivilegeEscalation must not be true"}},
		{"override adding a capability", override("            containers: [{name: chatserver, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]"),
			[]string{"spec.override.deployment.spec.template.spec.containers[0].securityContext.capabilities", "may only contain NET_BIND_SERVICE"}},
		{"override container without a name", override("            containers: [{image: busybox}]"),
			[]string{"spec.override.deployment.spec.template.spec.containers[0].name", "Required value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(context.Background(), object(t, tc.doc), client.DryRunAll)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q:\n%v", want, err)
				}
			}
		})
	}
}

func testInvalidChanges(t *testing.T, c client.Client) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, before string
		change       func(spec map[string]any)
		want         string
	}{
		{"switching a provisioned database to an existing one", "spec:" + database,
			func(s map[string]any) {
				s["database"] = map[string]any{"secretRef": map[string]any{"name": "db", "key": "uri"}}
			}, "spec.database: switching between secretRef (a database used as is) and a database the operator creates is not allowed"},
		{"switching a backend database to an existing one", "spec:\n  database: {backend: shared-pg}",
			func(s map[string]any) {
				s["database"] = map[string]any{"secretRef": map[string]any{"name": "db", "key": "uri"}}
			}, "switching between secretRef"},
		{"removing the database", "spec:" + database,
			func(s map[string]any) { delete(s, "database") }, "spec.database cannot be removed once set"},
		{"scaling by hand while autoscaling", "spec:\n  autoscaling: {maxReplicas: 5}" + broker + database,
			func(s map[string]any) { s["replicas"] = int64(4) }, "spec.replicas cannot change while spec.autoscaling is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := object(t, tc.before)
			u.SetName(strings.ReplaceAll(strings.ToLower(tc.name[:20]), " ", "-") + "x")
			if err := c.Create(ctx, u); err != nil {
				t.Fatalf("the starting point is refused: %v", err)
			}
			t.Cleanup(func() { _ = c.Delete(ctx, u) })
			tc.change(u.Object["spec"].(map[string]any))
			err := c.Update(ctx, u)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("update: %v\nwant an error saying %q", err, tc.want)
			}
		})
	}
}

func testDefaults(t *testing.T, c client.Client) {
	ctx := context.Background()
	minimal := object(t, "metadata: {name: minimal}\nspec: {}")
	if err := c.Create(ctx, minimal); err != nil {
		t.Fatal(err)
	}
	cc := &v1alpha1.ChatCluster{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(minimal), cc); err != nil {
		t.Fatal(err)
	}
	s := cc.Spec
	switch {
	case s.Replicas == nil || *s.Replicas != 1:
		t.Errorf("replicas = %v, want the default 1", s.Replicas)
	case len(s.Channels) != 1 || s.Channels[0].Name != "room" || s.Channels[0].History.Size != 1000 || !s.Channels[0].Recovery:
		t.Errorf("channels = %+v, want the default room", s.Channels)
	case s.Channels[0].AllowPublish != "subscribers" || s.Channels[0].AllowSubscribe != "authenticated":
		t.Errorf("channel permissions = %+v", s.Channels[0])
	case s.Resources == nil || s.Resources.Requests.Cpu().String() != "250m" || s.Resources.Requests.Memory().String() != "256Mi":
		t.Errorf("resources = %+v", s.Resources)
	case s.Limits.MaxMessageBytes != 65536 || *s.Limits.PublishesPerSecond != 20 || s.Limits.WriteQueueBytes != 1<<20:
		t.Errorf("limits = %+v", s.Limits)
	case s.Service.Type != "ClusterIP" || s.Logging.Level != "info" || s.DrainTimeout.Duration.String() != "25s":
		t.Errorf("service %+v logging %+v drain %v", s.Service, s.Logging, s.DrainTimeout)
	case *s.Auth.KeyRotationOverlap != (metav1.Duration{Duration: 24 * 3600e9}) || !*s.WebClient.Enabled || !*s.Monitoring.ServiceMonitor.Enabled:
		t.Errorf("auth %+v web %+v monitoring %+v", s.Auth, s.WebClient, s.Monitoring)
	case s.Transports.HTTPStream == nil || !*s.Transports.HTTPStream || s.Transports.SSE == nil || !*s.Transports.SSE:
		t.Errorf("transports = %+v, want both fallbacks on by default", s.Transports)
	}

	// A Go client reading and writing the object back changes nothing.
	generation := cc.Generation
	cc.Annotations = map[string]string{"touched": "yes"}
	if err := c.Update(ctx, cc); err != nil {
		t.Fatal(err)
	}
	if cc.Generation != generation {
		t.Errorf("a read-write round trip changed the spec (generation %d → %d)", generation, cc.Generation)
	}

	full := object(t, `metadata: {name: full}
spec:
  autoscaling: {minReplicas: 2, maxReplicas: 20, targetConnectionsPerPod: 5000}
  broker: {secretRef: {name: rabbitmq, key: uri}, deletionPolicy: Retain}
  database: {secretRef: {name: db, key: url}}
  auth: {allowAnonymous: true, jwksURL: 'https://idp.example.org/jwks', audience: chat}
  channels:
    - {name: room, history: {size: 1000, ttl: 720h}, presence: true, joinLeave: true, recovery: true}
    - {name: dm, personal: true, allowSubscribe: token}
    - {name: '', allowPublish: none}
    - {name: team, group: true, history: {size: 1000, ttl: 720h}, allowPublish: authenticated, allowHistory: authenticated}
  groups: {membersPerGroup: 200, invitesPerHour: 20, searchLanguage: english, maxMuteDuration: 24h}
  tls: {secretName: chat-tls}
  ingress: {host: chat.example.org, className: nginx, tlsSecretName: chat-tls}
  podDisruptionBudget: {minAvailable: 50%}
  networkPolicy: {enabled: true, allowedFrom: [{namespaceSelector: {matchLabels: {team: chat}}}], metricsFrom: [{namespaceSelector: {matchLabels: {team: prometheus}}}], apiFrom: [{podSelector: {matchLabels: {app: backend}}}]}
  override:
    deployment:
      spec:
        template:
          metadata: {annotations: {sidecar.example.org/inject: "true"}}
          spec:
            containers: [{name: chatserver, env: [{name: GODEBUG, value: x=1}], securityContext: {capabilities: {add: [NET_BIND_SERVICE]}}}]`)
	if err := c.Create(ctx, full); err != nil {
		t.Fatalf("a full spec is refused: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(full), cc); err != nil {
		t.Fatal(err)
	}
	raw, err := cc.Spec.Override.Deployment.Raw()
	if err != nil || !strings.Contains(string(raw), "sidecar.example.org/inject") || !strings.Contains(string(raw), "GODEBUG") {
		t.Errorf("the override lost fields outside its typed part (%v): %s", err, raw)
	}
	if *cc.Spec.Autoscaling.MinReplicas != 2 || cc.Spec.Autoscaling.ScaleDownStabilizationWindow.Duration.String() != "5m0s" {
		t.Errorf("autoscaling defaults = %+v", cc.Spec.Autoscaling)
	}
}

func testShape(t *testing.T, c client.Client) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "chatclusters.chat.parley.io"}, crd); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(crd.Spec.Names.ShortNames, []string{"chat"}) {
		t.Errorf("short names = %v", crd.Spec.Names.ShortNames)
	}
	v := crd.Spec.Versions[0]
	var columns []string
	for _, col := range v.AdditionalPrinterColumns {
		if col.Priority == 0 {
			columns = append(columns, col.Name)
		}
	}
	if !slices.Equal(columns, []string{"Ready", "Replicas", "Endpoint", "Age"}) {
		t.Errorf("printer columns = %v", columns)
	}
	sc := v.Subresources.Scale
	if v.Subresources.Status == nil || sc == nil || sc.SpecReplicasPath != ".spec.replicas" ||
		sc.StatusReplicasPath != ".status.replicas" || sc.LabelSelectorPath == nil || *sc.LabelSelectorPath != ".status.selector" {
		t.Errorf("subresources = %+v", v.Subresources)
	}
}

// testBackendSpecs: ChatBackends the platform team writes are checked by the
// API server, with messages naming the field.
func testBackendSpecs(t *testing.T, c client.Client) {
	const admin = "{adminSecretRef: {namespace: platform, name: pg, key: uri}}"
	for _, tc := range []struct {
		name, doc string
		want      []string // empty: accepted
	}{
		{"a PostgreSQL backend for every namespace", "spec:\n  postgresql: " + admin + "\n  allowedNamespaces: {from: All}", nil},
		{"a RabbitMQ backend for labelled namespaces",
			"spec:\n  rabbitmq: {connectionSecret: {namespace: platform, name: rmq}}\n  allowedNamespaces: {from: Selector, selector: {matchLabels: {team: chat}}}", nil},
		{"a RabbitmqCluster over TLS", "spec:\n  rabbitmq: {clusterRef: {namespace: rabbitmq, name: shared}, tls: {caSecretRef: {namespace: rabbitmq, name: ca, key: ca.crt}}}\n  allowedNamespaces: {from: All}", nil},
		{"neither kind", "spec:\n  allowedNamespaces: {from: All}", []string{"spec: set exactly one of rabbitmq and postgresql"}},
		{"both kinds", "spec:\n  postgresql: " + admin + "\n  rabbitmq: {connectionSecret: {namespace: p, name: r}}\n  allowedNamespaces: {from: All}",
			[]string{"spec: set exactly one of rabbitmq and postgresql"}},
		{"no allowed namespaces", "spec:\n  postgresql: " + admin, []string{"spec.allowedNamespaces", "Required value"}},
		{"a selector rule without a selector", "spec:\n  postgresql: " + admin + "\n  allowedNamespaces: {from: Selector}",
			[]string{"spec.allowedNamespaces.selector", "selector is required when from is Selector"}},
		{"an unknown from", "spec:\n  postgresql: " + admin + "\n  allowedNamespaces: {from: Same}",
			[]string{"spec.allowedNamespaces.from", "Unsupported value"}},
		{"a cluster reference and a Secret", "spec:\n  postgresql: {clusterRef: {namespace: db, name: pg}, adminSecretRef: {namespace: p, name: pg, key: uri}}\n  allowedNamespaces: {from: All}",
			[]string{"spec.postgresql", "set exactly one of clusterRef and adminSecretRef"}},
		{"a RabbitMQ with neither", "spec:\n  rabbitmq: {}\n  allowedNamespaces: {from: All}",
			[]string{"spec.rabbitmq", "set exactly one of clusterRef and connectionSecret"}},
		{"a Secret without a namespace", "spec:\n  postgresql: {adminSecretRef: {name: pg, key: uri}}\n  allowedNamespaces: {from: All}",
			[]string{"spec.postgresql.adminSecretRef.namespace", "Required value"}},
		{"a name with a dot", "metadata: {name: shared.pg}\nspec:\n  postgresql: " + admin + "\n  allowedNamespaces: {from: All}",
			[]string{"metadata.name must be a DNS label"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte("apiVersion: chat.parley.io/v1alpha1\nkind: ChatBackend\n"+tc.doc), &u.Object); err != nil {
				t.Fatalf("bad test YAML: %v", err)
			}
			if u.GetName() == "" {
				u.SetName("shared")
			}
			err := c.Create(context.Background(), u, client.DryRunAll)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q:\n%v", want, err)
				}
			}
		})
	}
}
