package resource

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/chatserver/config"
)

// Group channels and the groups limits reach the config when set; a
// cluster without them renders no groups key (its pods stay).
func TestGroupsReachTheConfig(t *testing.T) {
	plain, err := RenderConfigJSON(cluster())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), `"groups"`) || strings.Contains(string(plain), `"group"`) {
		t.Errorf("a cluster without groups renders them:\n%s", plain)
	}
	members, invites := int32(200), int32(20)
	data, err := RenderConfigJSON(cluster(func(cc *v1alpha1.ChatCluster) {
		cc.Spec.Channels = append(cc.Spec.Channels, v1alpha1.ChannelSpec{Name: "team", Group: true, AllowPublish: "authenticated"})
		cc.Spec.Groups = &v1alpha1.GroupsSpec{MembersPerGroup: &members, InvitesPerHour: &invites, SearchLanguage: "english",
			MaxMuteDuration: &metav1.Duration{Duration: 24 * time.Hour}}
	}))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("the chat server refuses the config: %v", err)
	}
	ns, ok := cfg.NamespaceOf("team:x")
	if !ok || !ns.Group {
		t.Errorf("group namespace = %+v", ns)
	}
	g := cfg.Groups
	if g.Members() != 200 || g.Invites() != 20 || g.PerUser() != config.DefaultGroupsPerUser || g.Language() != "english" || g.MaxMute() != 24*time.Hour {
		t.Errorf("groups = %+v", g)
	}
}
