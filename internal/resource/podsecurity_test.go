package resource

import (
	"errors"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/pod-security-admission/policy"

	"github.com/parley-chat/parley/api/v1alpha1"
)

// container patches the chat server container.
func container(fields string) string {
	return `{"spec":{"template":{"spec":{"containers":[{"name":"chatserver",` + fields + `}]}}}}`
}

// podSpec patches the pod spec.
func podSpec(fields string) string {
	return `{"spec":{"template":{"spec":{` + fields + `}}}}`
}

func withOverride(t *testing.T, patch string) func(*v1alpha1.ChatCluster) {
	t.Helper()
	o, err := v1alpha1.NewDeploymentOverride([]byte(patch))
	if err != nil {
		t.Fatal(err)
	}
	return func(cc *v1alpha1.ChatCluster) { cc.Spec.Override = &v1alpha1.OverrideSpec{Deployment: o} }
}

// restrictedSidecar is a second container that meets the restricted standard.
const restrictedSidecar = `{"name":"sidecar","image":"example.org/sidecar:1","securityContext":{
	"allowPrivilegeEscalation":false,"runAsNonRoot":true,"capabilities":{"drop":["ALL"]},
	"seccompProfile":{"type":"RuntimeDefault"}}}`

func TestPodSecurityRefusesWhatAnOverrideCouldOpen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch string
		// spec changes the ChatCluster some other way than the override.
		spec func(*v1alpha1.ChatCluster)
		want []string
	}{
		{name: "pod securityContext deleted", patch: podSpec(`"securityContext":{"$patch":"delete"}`),
			want: []string{"seccompProfile_restricted"}},
		{name: "container securityContext deleted", patch: container(`"securityContext":{"$patch":"delete"}`),
			want: []string{"allowPrivilegeEscalation", "capabilities_restricted", CheckReadOnlyRootFilesystem}},
		{name: "both securityContexts deleted",
			patch: podSpec(`"securityContext":{"$patch":"delete"},"containers":[{"name":"chatserver","securityContext":{"$patch":"delete"}}]`),
			want:  []string{"allowPrivilegeEscalation", "capabilities_restricted", "runAsNonRoot", "seccompProfile_restricted", CheckReadOnlyRootFilesystem}},
		{name: "privileged", patch: container(`"securityContext":{"privileged":true}`),
			want: []string{"privileged"}},
		{name: "host network", patch: podSpec(`"hostNetwork":true`), want: []string{"hostNamespaces"}},
		{name: "host PID", patch: podSpec(`"hostPID":true`), want: []string{"hostNamespaces"}},
		{name: "host IPC", patch: podSpec(`"hostIPC":true`), want: []string{"hostNamespaces"}},
		{name: "hostPath volume", patch: podSpec(`"volumes":[{"name":"node","hostPath":{"path":"/"}}]`),
			want: []string{"restrictedVolumes"}},
		{name: "SYS_ADMIN added", patch: container(`"securityContext":{"capabilities":{"add":["SYS_ADMIN"]}}`),
			want: []string{"capabilities_restricted"}},
		{name: "NET_RAW added", patch: container(`"securityContext":{"capabilities":{"add":["NET_RAW"]}}`),
			want: []string{"capabilities_restricted"}},
		{name: "capabilities drop removed", patch: container(`"securityContext":{"capabilities":{"drop":null}}`),
			want: []string{"capabilities_restricted"}},
		{name: "runAsUser 0 on the container", patch: container(`"securityContext":{"runAsUser":0}`),
			want: []string{"runAsUser"}},
		{name: "runAsUser 0 on the pod", patch: podSpec(`"securityContext":{"runAsUser":0}`),
			want: []string{"runAsUser"}},
		{name: "runAsNonRoot false on the pod", patch: podSpec(`"securityContext":{"runAsNonRoot":false}`),
			want: []string{"runAsNonRoot"}},
		{name: "allowPrivilegeEscalation true", patch: container(`"securityContext":{"allowPrivilegeEscalation":true}`),
			want: []string{"allowPrivilegeEscalation"}},
		{name: "seccomp Unconfined", patch: podSpec(`"securityContext":{"seccompProfile":{"type":"Unconfined"}}`),
			want: []string{"seccompProfile_restricted"}},
		{name: "AppArmor unconfined", patch: container(`"securityContext":{"appArmorProfile":{"type":"Unconfined"}}`),
			want: []string{"appArmorProfile"}},
		{name: "AppArmor unconfined by a spec.pod annotation, no override", spec: func(cc *v1alpha1.ChatCluster) {
			cc.Spec.Pod.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/chatserver": "unconfined"}
		}, want: []string{"appArmorProfile"}},
		{name: "SELinux spc_t", patch: podSpec(`"securityContext":{"seLinuxOptions":{"type":"spc_t"}}`),
			want: []string{"seLinuxOptions"}},
		{name: "unsafe sysctl", patch: podSpec(`"securityContext":{"sysctls":[{"name":"kernel.msgmax","value":"65536"}]}`),
			want: []string{"sysctls"}},
		{name: "procMount Unmasked", patch: container(`"securityContext":{"procMount":"Unmasked"}`),
			want: []string{"procMount_restricted"}},
		{name: "hostPort", patch: container(`"ports":[{"containerPort":8000,"hostPort":8000}]`),
			want: []string{"hostPorts"}},
		{name: "probe on another host", patch: container(`"readinessProbe":{"httpGet":{"host":"10.0.0.1"}}`),
			want: []string{"hostProbesAndHostLifecycle"}},
		{name: "Windows hostProcess", patch: container(`"securityContext":{"windowsOptions":{"hostProcess":true}}`),
			want: []string{"windowsHostProcess"}},
		{name: "another service account with its token", patch: podSpec(`"serviceAccountName":"admin","automountServiceAccountToken":true`),
			want: []string{CheckAutomountToken, CheckServiceAccountName}},
		{name: "deprecated serviceAccount field", patch: podSpec(`"serviceAccount":"admin"`),
			want: []string{CheckServiceAccountName}},
		{name: "token projected by hand", patch: podSpec(`"volumes":[{"name":"token","projected":{"sources":[{"serviceAccountToken":{"path":"token"}}]}}]`),
			want: []string{CheckServiceAccountToken}},
		{name: "another image", patch: container(`"image":"example.org/evil:1"`), want: []string{CheckImage}},
		{name: "writable root filesystem", patch: container(`"securityContext":{"readOnlyRootFilesystem":false}`),
			want: []string{CheckReadOnlyRootFilesystem}},
		{name: "chat server container removed", patch: container(`"$patch":"delete"`),
			want: []string{CheckChatServerContainer}},
		{name: "sidecar without a securityContext", patch: podSpec(`"containers":[{"name":"sidecar","image":"example.org/sidecar:1"}]`),
			want: []string{"allowPrivilegeEscalation", "capabilities_restricted"}},
		{name: "init container without a securityContext", patch: podSpec(`"initContainers":[{"name":"init","image":"example.org/init:1"}]`),
			want: []string{"allowPrivilegeEscalation", "capabilities_restricted"}},
		{name: "root in a user namespace", patch: podSpec(`"hostUsers":false,"securityContext":{"runAsNonRoot":false,"runAsUser":0},
			"containers":[{"name":"chatserver","securityContext":{"runAsNonRoot":null}}]`),
			want: []string{CheckRunAsNonRoot, CheckRunAsUser}},
		{name: "everything at once", patch: podSpec(`"hostNetwork":true,"securityContext":{"$patch":"delete"},
			"containers":[{"name":"chatserver","image":"x","securityContext":{"privileged":true,"readOnlyRootFilesystem":false}}]`),
			want: []string{"hostNamespaces", "privileged", "seccompProfile_restricted", CheckReadOnlyRootFilesystem, CheckImage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var changes []func(*v1alpha1.ChatCluster)
			if tc.patch != "" {
				changes = append(changes, withOverride(t, tc.patch))
			}
			if tc.spec != nil {
				changes = append(changes, tc.spec)
			}
			d, err := (&DeploymentBuilder{cluster(changes...)}).Desired()
			var refused *PodSecurityError
			if !errors.As(err, &refused) {
				t.Fatalf("Desired = %v, %v; want a *PodSecurityError", d, err)
			}
			if d != nil {
				t.Error("a refused template still came with a Deployment")
			}
			got := refused.Checks()
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("failing checks %v, want %v\n%v", got, want, err)
			}
			for _, v := range refused.Violations {
				if v.Message == "" || !strings.Contains(err.Error(), v.Check+": "+v.Message) {
					t.Errorf("the error does not carry check %s with its message %q: %v", v.Check, v.Message, err)
				}
			}
		})
	}
}

func TestPodSecurityMessagesNameTheField(t *testing.T) {
	patch := podSpec(`"securityContext":{"$patch":"delete"},"serviceAccountName":"admin",
		"containers":[{"name":"chatserver","image":"x","securityContext":{"$patch":"delete"}}]`)
	_, err := (&DeploymentBuilder{cluster(withOverride(t, patch))}).Desired()
	var refused *PodSecurityError
	if !errors.As(err, &refused) {
		t.Fatalf("Desired = %v", err)
	}
	for check, field := range map[string]string{
		"allowPrivilegeEscalation":  `container "chatserver" must set securityContext.allowPrivilegeEscalation=false`,
		"capabilities_restricted":   `securityContext.capabilities.drop=["ALL"]`,
		"seccompProfile_restricted": `securityContext.seccompProfile.type`,
		CheckReadOnlyRootFilesystem: "spec.template.spec.containers[chatserver].securityContext.readOnlyRootFilesystem must be true",
		CheckImage:                  `spec.template.spec.containers[chatserver].image is "x", must be "example.org/parley:1.0"`,
		CheckServiceAccountName:     `spec.template.spec.serviceAccountName is "admin", must be the cluster's own "team-chat"`,
	} {
		i := slices.IndexFunc(refused.Violations, func(v Violation) bool { return v.Check == check })
		if i < 0 {
			t.Errorf("no %s violation in %v", check, err)
			continue
		}
		if m := refused.Violations[i].Message; !strings.Contains(m, field) {
			t.Errorf("%s: message %q does not name %s", check, m, field)
		}
	}
	if !strings.Contains(err.Error(), "restricted Pod Security Standard (v1.37)") {
		t.Errorf("the error does not say which standard: %v", err)
	}
}

func TestPodSecurityAllowsWhatAnOverrideIsFor(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch string
		spec  func(*v1alpha1.ChatCluster)
	}{
		{name: "no override"},
		{name: "with TLS, broker and database", spec: func(cc *v1alpha1.ChatCluster) { withBrokerAndDatabase(cc); withTLS(cc) }},
		{name: "environment variables", patch: container(`"env":[{"name":"GOMEMLIMIT","value":"450MiB"}]`)},
		{name: "resources", patch: container(`"resources":{"limits":{"memory":"512Mi"}}`)},
		{name: "labels and annotations", patch: `{"spec":{"template":{"metadata":{"labels":{"team":"a"},"annotations":{"x":"y"}}}}}`},
		{name: "a restricted sidecar", patch: podSpec(`"containers":[` + restrictedSidecar + `]`)},
		{name: "the sidecar of docs/pod-security.md", patch: podSpec(`"containers":[{"name":"log-shipper","image":"example.org/log-shipper:1.2",
			"securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]`)},
		{name: "a restricted init container", patch: podSpec(`"initContainers":[` + strings.Replace(restrictedSidecar, `"sidecar"`, `"init"`, 1) + `]`)},
		{name: "NET_BIND_SERVICE, the one capability restricted allows", patch: container(`"securityContext":{"capabilities":{"add":["NET_BIND_SERVICE"]}}`)},
		{name: "a user namespace, not root", patch: podSpec(`"hostUsers":false`)},
		{name: "the cluster's own service account named again", patch: podSpec(`"serviceAccountName":"team-chat","serviceAccount":"team-chat"`)},
		{name: "a spec.image", spec: func(cc *v1alpha1.ChatCluster) { cc.Spec.Image = "example.org/parley:2.0" }},
		{name: "a safe sysctl", patch: podSpec(`"securityContext":{"sysctls":[{"name":"net.ipv4.tcp_keepalive_time","value":"60"}]}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var changes []func(*v1alpha1.ChatCluster)
			if tc.patch != "" {
				changes = append(changes, withOverride(t, tc.patch))
			}
			if tc.spec != nil {
				changes = append(changes, tc.spec)
			}
			b := &DeploymentBuilder{cluster(changes...)}
			if err := b.Update(&appsv1.Deployment{}); err != nil {
				t.Errorf("Update = %v, want the template accepted", err)
			}
		})
	}
}

// The version is pinned on purpose (see PodSecurityVersion); this fails when
// a bump of k8s.io/pod-security-admission brings a newer policy, so the pin
// moves by a decision, not by accident.
func TestPodSecurityVersionIsTheNewestTheLibraryKnows(t *testing.T) {
	newest := PodSecurityVersion
	for _, c := range policy.DefaultChecks() {
		last := c.Versions[len(c.Versions)-1].MinimumVersion
		if newest.Older(last) {
			newest = last
		}
	}
	if newest != PodSecurityVersion {
		t.Errorf("k8s.io/pod-security-admission defines policy %s, the template is held to %s: review the new checks and move PodSecurityVersion", newest, PodSecurityVersion)
	}
}
