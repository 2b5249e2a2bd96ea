package resource

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/internal/naming"
)

// preStopPause lets endpoints drop a stopping pod before it stops accepting
// connections, so no client is sent to a server that is going away.
const preStopPause = 5 * time.Second

// minReadySeconds is how long a new pod must stay ready (probes passing,
// broker and store answering) before the rollout counts it and lets the
// next old pods go: a roll proceeds one settled batch at a time, and a new
// image that fails soon after start stops the roll before most clients
// have moved onto it.
const minReadySeconds int32 = 10

// DeploymentBuilder builds the chat server Deployment.
type DeploymentBuilder struct{ Cluster }

// Build returns the named, empty Deployment.
func (b *DeploymentBuilder) Build() (Object, error) {
	return &appsv1.Deployment{ObjectMeta: objectMeta(b.Cluster, b.Name())}, nil
}

// Update sets the desired Deployment fields on the live object.
//
// The replica count is set only when autoscaling is off (or on creation), so
// the HPA's choice survives. The pod template is replaced only when the
// desired template changed since the operator last wrote it, or when a field
// the operator sets was changed by someone else: a template the API server
// filled with defaults is left alone, and nothing rolls without a real change.
func (b *DeploymentBuilder) Update(obj Object) error {
	d := obj.(*appsv1.Deployment)
	if held := b.heldImage(d); held != "" {
		b = &DeploymentBuilder{b.Cluster}
		b.DefaultImage = held
	}
	desired, err := b.Desired()
	if err != nil {
		return err
	}
	setLabels(d, desired.Labels)
	if d.Spec.Selector == nil {
		d.Spec.Selector = desired.Spec.Selector
	}
	switch {
	case !b.Autoscaled():
		d.Spec.Replicas = ptrTo(b.Replicas())
	case d.Spec.Replicas == nil:
		d.Spec.Replicas = ptrTo(b.MinReplicas())
	}
	d.Spec.Strategy = desired.Spec.Strategy
	d.Spec.MinReadySeconds = desired.Spec.MinReadySeconds
	if desired.Spec.RevisionHistoryLimit != nil {
		d.Spec.RevisionHistoryLimit = desired.Spec.RevisionHistoryLimit
	}
	if desired.Spec.ProgressDeadlineSeconds != nil {
		d.Spec.ProgressDeadlineSeconds = desired.Spec.ProgressDeadlineSeconds
	}
	if a := desired.Spec.Template.Annotations; a != nil {
		keep, err := keepEquivalentConfigHash(b.Cluster, d.Spec.Template.Annotations[AnnotationConfigHash], a[AnnotationConfigHash])
		if err != nil {
			return err
		}
		a[AnnotationConfigHash] = keep
	}
	hash, err := hashJSON(desired.Spec.Template)
	if err != nil {
		return err
	}
	same, err := jsonSubset(desired.Spec.Template, d.Spec.Template)
	if err != nil {
		return err
	}
	if d.Annotations[AnnotationTemplateHash] != hash || !same {
		restartedAt, restarted := d.Spec.Template.Annotations[AnnotationRestartedAt]
		d.Spec.Template = desired.Spec.Template
		if _, ours := desired.Spec.Template.Annotations[AnnotationRestartedAt]; restarted && !ours {
			// A person's `kubectl rollout restart` already happened; dropping
			// its mark would restart every pod once more.
			d.Spec.Template.Annotations[AnnotationRestartedAt] = restartedAt
		}
		setAnnotation(d, AnnotationTemplateHash, hash)
	}
	return nil
}

// AnnotationRestartedAt is what `kubectl rollout restart` sets on a pod
// template. The operator never sets it; it keeps it when it rewrites the template.
const AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"

// heldImage is the image the live Deployment's chat servers run when the
// cluster holds it (spec.defaultImagePolicy Hold, no spec.image), so an
// operator upgrade with a new default image leaves them as they are; "" when
// the operator's default applies (Follow, or no Deployment yet).
func (b *DeploymentBuilder) heldImage(live *appsv1.Deployment) string {
	if b.Spec.Image != "" || b.Spec.DefaultImagePolicy != v1alpha1.DefaultImagePolicyHold {
		return ""
	}
	for _, c := range live.Spec.Template.Spec.Containers {
		if c.Name == naming.ContainerName {
			return c.Image
		}
	}
	return ""
}

// Desired is the whole Deployment the spec asks for, override applied. It
// returns a *PodSecurityError, and no Deployment, when the pod template
// breaks the restricted Pod Security Standard or Parley's pod rules.
func (b *DeploymentBuilder) Desired() (*appsv1.Deployment, error) {
	tmpl, err := b.podTemplate()
	if err != nil {
		return nil, err
	}
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: b.Name(), Namespace: b.Namespace, Labels: naming.Labels(b.ChatCluster.Name)},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: naming.SelectorLabels(b.ChatCluster.Name)},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					// Never below the asked capacity during a rollout: new
					// pods come up before old ones drain their clients.
					MaxUnavailable: ptrTo(intstr.FromInt32(0)),
					MaxSurge:       ptrTo(intstr.FromString("25%")),
				},
			},
			MinReadySeconds:      minReadySeconds,
			RevisionHistoryLimit: ptrTo[int32](5),
			Template:             tmpl,
		},
	}
	if o := b.Spec.Override; o != nil && o.Deployment != nil {
		if d, err = applyOverride(d, o.Deployment.Raw); err != nil {
			return nil, err
		}
	}
	// Always the final template, override or not: spec.pod annotations
	// reach the pods too, and the builder's own output is held to the same rules.
	if err := CheckPodSecurity(b.Cluster, &d.Spec.Template); err != nil {
		return nil, err
	}
	return d, nil
}

func applyOverride(d *appsv1.Deployment, raw func() ([]byte, error)) (*appsv1.Deployment, error) {
	patch, err := raw()
	if err != nil {
		return nil, fmt.Errorf("spec.override.deployment: %w", err)
	}
	if len(patch) == 0 {
		return d, nil
	}
	base, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	merged, err := strategicpatch.StrategicMergePatch(base, patch, appsv1.Deployment{})
	if err != nil {
		return nil, fmt.Errorf("spec.override.deployment: not a valid strategic-merge patch for a Deployment: %w", err)
	}
	out := &appsv1.Deployment{}
	if err := json.Unmarshal(merged, out); err != nil {
		return nil, fmt.Errorf("spec.override.deployment: %w", err)
	}
	// The selector and the identity are the operator's; a patch cannot move them.
	out.ObjectMeta.Name, out.ObjectMeta.Namespace = d.Name, d.Namespace
	out.Spec.Selector = d.Spec.Selector
	maps.Copy(out.Spec.Template.Labels, d.Spec.Template.Labels)
	return out, nil
}

func (b *DeploymentBuilder) podTemplate() (corev1.PodTemplateSpec, error) {
	s := b.Spec
	hash, err := configHash(b.Cluster)
	if err != nil {
		return corev1.PodTemplateSpec{}, err
	}
	annotations := maps.Clone(s.Pod.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationConfigHash] = hash
	annotations["kubectl.kubernetes.io/default-container"] = naming.ContainerName

	spread := s.Pod.TopologySpreadConstraints
	if len(spread) == 0 {
		spread = defaultSpread(b.ChatCluster.Name)
	}
	volumes, mounts := b.volumes()
	grace := terminationGrace(b.Cluster)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      naming.WithLabels(b.ChatCluster.Name, s.Pod.Labels),
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			ServiceAccountName:            b.Name(),
			AutomountServiceAccountToken:  ptrTo(false),
			EnableServiceLinks:            ptrTo(false),
			TerminationGracePeriodSeconds: &grace,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptrTo(true),
				RunAsUser:      ptrTo(RunAsUser),
				RunAsGroup:     ptrTo(RunAsUser),
				FSGroup:        ptrTo(RunAsUser),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			ImagePullSecrets:          s.ImagePullSecrets,
			NodeSelector:              s.Pod.NodeSelector,
			Tolerations:               s.Pod.Tolerations,
			Affinity:                  s.Pod.Affinity,
			PriorityClassName:         s.Pod.PriorityClassName,
			TopologySpreadConstraints: spread,
			Containers:                []corev1.Container{b.container(mounts)},
			Volumes:                   volumes,
		},
	}, nil
}

func (b *DeploymentBuilder) container(mounts []corev1.VolumeMount) corev1.Container {
	portName, scheme := "http", corev1.URISchemeHTTP
	if b.Spec.TLS != nil {
		portName, scheme = "https", corev1.URISchemeHTTPS
	}
	// The probes use the public port. Readiness decides whether clients are
	// sent to the pod, so it asks the listener clients use (its TLS
	// included); its terse /readyz status code is all the kubelet reads. A
	// NetworkPolicy never blocks them: traffic from the pod's own node, the
	// kubelet's, is always allowed.
	probe := func(path string, period, timeout, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString(portName), Scheme: scheme,
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   timeout,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	return corev1.Container{
		Name:            naming.ContainerName,
		Image:           b.Image(),
		ImagePullPolicy: b.Spec.ImagePullPolicy,
		Command:         []string{"/chatserver", "--config=" + ConfigFile},
		Ports: []corev1.ContainerPort{
			{Name: portName, ContainerPort: ChatPort, Protocol: corev1.ProtocolTCP},
			{Name: AdminPortName, ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: resources(b.Spec.Resources),
		// Up within a minute, then ready only while the broker and store answer.
		StartupProbe:   probe("/healthz", 2, 2, 30),
		ReadinessProbe: probe("/readyz", 5, 2, 3),
		LivenessProbe:  probe("/healthz", 10, 3, 3),
		Lifecycle: &corev1.Lifecycle{
			PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: int64(preStopPause / time.Second)}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptrTo(false),
			ReadOnlyRootFilesystem:   ptrTo(true),
			RunAsNonRoot:             ptrTo(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: mounts,
	}
}

// secretMode keeps mounted files readable by the chat server's group only.
const secretMode int32 = 0o440

func (b *DeploymentBuilder) volumes() ([]corev1.Volume, []corev1.VolumeMount) {
	name := b.ChatCluster.Name
	secret := func(vol, secretName string, items []corev1.KeyToPath) corev1.Volume {
		return corev1.Volume{Name: vol, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secretName, Items: items, DefaultMode: ptrTo(secretMode),
		}}}
	}
	mount := func(vol, dir string) corev1.VolumeMount {
		return corev1.VolumeMount{Name: vol, MountPath: dir, ReadOnly: true}
	}
	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: naming.ConfigMapName(name)},
			DefaultMode:          ptrTo(secretMode),
		}}},
		secret("jwt", naming.JWTSecretName(name), nil),
		secret("api-key", naming.APIKeySecretName(name), nil),
	}
	mounts := []corev1.VolumeMount{mount("config", ConfigDir), mount("jwt", JWTDir), mount("api-key", APIKeyDir)}
	// A backend that verifies TLS puts its CA in the same Secret as the URI.
	items := func(key string, ca bool) []corev1.KeyToPath {
		out := []corev1.KeyToPath{{Key: key, Path: URIFile}}
		if ca {
			out = append(out, corev1.KeyToPath{Key: naming.CAKey, Path: CAFile})
		}
		return out
	}
	if secretName, key, ok := brokerURISecret(b.Cluster); ok {
		volumes = append(volumes, secret("broker", secretName, items(key, b.BrokerCA)))
		mounts = append(mounts, mount("broker", BrokerDir))
	}
	if secretName, key, ok := databaseURISecret(b.Cluster); ok {
		volumes = append(volumes, secret("database", secretName, items(key, b.DatabaseCA)))
		mounts = append(mounts, mount("database", DatabaseDir))
	}
	if t := b.Spec.TLS; t != nil {
		volumes = append(volumes, secret("tls", t.SecretName, []corev1.KeyToPath{
			{Key: corev1.TLSCertKey, Path: corev1.TLSCertKey},
			{Key: corev1.TLSPrivateKeyKey, Path: corev1.TLSPrivateKeyKey},
		}))
		mounts = append(mounts, mount("tls", TLSDir))
	}
	// The root filesystem is read-only; /tmp is the one writable place.
	volumes = append(volumes, corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptrTo(resource.MustParse("16Mi"))},
	}})
	mounts = append(mounts, corev1.VolumeMount{Name: "tmp", MountPath: "/tmp"})
	return volumes, mounts
}

// defaultSpread spreads the pods across nodes and zones as evenly as the
// scheduler can, without refusing to schedule when it cannot.
func defaultSpread(cluster string) []corev1.TopologySpreadConstraint {
	sel := &metav1.LabelSelector{MatchLabels: naming.SelectorLabels(cluster)}
	c := func(key string) corev1.TopologySpreadConstraint {
		return corev1.TopologySpreadConstraint{
			MaxSkew: 1, TopologyKey: key, WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector: sel,
			// Spread each rollout's pods on their own, not old and new together.
			MatchLabelKeys: []string{appsv1.DefaultDeploymentUniqueLabelKey},
		}
	}
	return []corev1.TopologySpreadConstraint{c(corev1.LabelHostname), c(corev1.LabelTopologyZone)}
}

func resources(r *corev1.ResourceRequirements) corev1.ResourceRequirements {
	if r == nil {
		return corev1.ResourceRequirements{}
	}
	return *r
}
