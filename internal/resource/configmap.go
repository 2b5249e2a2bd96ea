package resource

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/parley-chat/parley/api/v1alpha1"
	"github.com/parley-chat/parley/chatserver/config"
	"github.com/parley-chat/parley/internal/keys"
	"github.com/parley-chat/parley/internal/naming"
)

// ConfigMapBuilder builds the ConfigMap holding the chat server's config,
// rendered from the spec with the chat server's own config type.
type ConfigMapBuilder struct{ Cluster }

// Build returns the named, empty ConfigMap.
func (b *ConfigMapBuilder) Build() (Object, error) {
	return &corev1.ConfigMap{ObjectMeta: objectMeta(b.Cluster, naming.ConfigMapName(b.ChatCluster.Name))}, nil
}

// Update writes the rendered config.
func (b *ConfigMapBuilder) Update(obj Object) error {
	cm := obj.(*corev1.ConfigMap)
	data, err := RenderConfigJSON(b.Cluster)
	if err != nil {
		return err
	}
	setLabels(cm, naming.Labels(b.ChatCluster.Name))
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[ConfigKey] = string(data)
	return nil
}

// RenderConfigJSON renders and validates the config file the chat servers load.
func RenderConfigJSON(c Cluster) ([]byte, error) {
	cfg := RenderConfig(c)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("render chat server config: %w", err)
	}
	data, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("render chat server config: %w", err)
	}
	return data, nil
}

// RenderConfig turns the spec into the chat server's config. Secrets are not
// in it: it names the files the Secrets are mounted at.
func RenderConfig(c Cluster) config.Config {
	s := c.Spec
	cfg := config.Default()
	cfg.HTTP.Address = fmt.Sprintf(":%d", ChatPort)
	cfg.HTTP.AdminAddress = fmt.Sprintf(":%d", AdminPort)
	cfg.HTTP.ShutdownGracePeriod = config.Duration(c.drainTimeout())
	// Both keys of Secret <name>-api-key: the previous one stays valid for
	// the rotation overlap, then the operator empties it.
	cfg.HTTP.APIKeyFiles = []string{APIKeyDir + "/" + naming.APIKeyKey, APIKeyDir + "/" + keys.APIKeyPreviousKey}
	cfg.HTTP.AllowedOrigins = s.AllowedOrigins
	// Written out either way, so the ConfigMap says what is served.
	// Only a transport turned off is written: on is the chat server's
	// default, and leaving it out keeps the config of every existing cluster
	// byte for byte what it was, so this operator upgrade rolls no pod
	// (docs/upgrading.md).
	if t := s.Transports.HTTPStream; t != nil && !*t {
		cfg.HTTP.HTTPStream = ptrTo(false)
	}
	if t := s.Transports.SSE; t != nil && !*t {
		cfg.HTTP.SSE = ptrTo(false)
	}
	if s.TLS != nil {
		cfg.HTTP.TLS = &config.TLS{
			CertFile: TLSDir + "/" + corev1.TLSCertKey,
			KeyFile:  TLSDir + "/" + corev1.TLSPrivateKeyKey,
		}
	}

	cfg.Auth = config.Auth{
		AllowAnonymous:  s.Auth.AllowAnonymous,
		HMACSecretFiles: []string{JWTDir + "/" + naming.JWTCurrentKey, JWTDir + "/" + naming.JWTPreviousKey},
		JWKSURL:         s.Auth.JWKSURL,
		Audience:        s.Auth.Audience,
		Issuer:          s.Auth.Issuer,
	}

	if s.Broker != nil {
		ex := naming.ExchangeNames(c.Namespace, c.ChatCluster.Name)
		cfg.Broker = config.Broker{
			Type:               "amqp",
			URLFile:            BrokerDir + "/" + URIFile,
			Exchange:           ex.Publications,
			ControlExchange:    ex.Control,
			DeadLetterExchange: ex.DeadLetter,
		}
		if c.BrokerCA {
			cfg.Broker.CAFile = BrokerDir + "/" + CAFile
		}
	} else {
		cfg.Broker = config.Broker{Type: "memory"}
	}

	if s.Database != nil {
		cfg.Store.Type = "postgres"
		cfg.Store.URLFile = DatabaseDir + "/" + URIFile
		if s.Database.MaxConnections > 0 {
			cfg.Store.MaxConns = int(s.Database.MaxConnections)
		}
	} else {
		cfg.Store.Type, cfg.Store.URLFile = "memory", ""
	}

	if len(s.Channels) > 0 {
		cfg.Namespaces = make([]config.Namespace, 0, len(s.Channels))
		for _, ch := range s.Channels {
			cfg.Namespaces = append(cfg.Namespaces, renderChannel(ch))
		}
	}

	l := &cfg.Limits
	if s.Limits.MaxMessageBytes > 0 {
		l.MaxMessageBytes = int(s.Limits.MaxMessageBytes)
	}
	if s.Limits.PublishesPerSecond != nil {
		l.PublishesPerSecond = int(*s.Limits.PublishesPerSecond)
	}
	if s.Limits.ConnectionsPerUser != nil {
		l.ConnectionsPerUser = int(*s.Limits.ConnectionsPerUser)
	}
	if s.Limits.SubscriptionsPerConnection != nil {
		l.SubscriptionsPerConnection = int(*s.Limits.SubscriptionsPerConnection)
	}
	if s.Limits.WriteQueueBytes > 0 {
		l.WriteQueueBytes = int(s.Limits.WriteQueueBytes)
	}
	// Written only when set: left empty, the chat server's defaults apply and
	// existing clusters' configs (and pods) stay as they were.
	if v := s.Limits.CommandCostPerSecond; v != nil {
		l.CommandCostPerSecond = int(*v)
	}
	if v := s.Limits.UserCommandCostPerSecond; v != nil {
		l.UserCommandCostPerSecond = int(*v)
	}

	// Groups are written only when set: a cluster without them renders as before.
	if g := s.Groups; g != nil {
		for dst, src := range map[*int]*int32{
			&cfg.Groups.MembersPerGroup: g.MembersPerGroup, &cfg.Groups.GroupsPerUser: g.GroupsPerUser,
			&cfg.Groups.InvitesPerHour: g.InvitesPerHour, &cfg.Groups.SearchesPerMinute: g.SearchesPerMinute,
		} {
			if src != nil {
				*dst = int(*src)
			}
		}
		cfg.Groups.SearchLanguage = g.SearchLanguage
		if g.MaxMuteDuration != nil {
			cfg.Groups.MaxMuteDuration = config.Duration(g.MaxMuteDuration.Duration)
		}
	}

	if s.WebClient.Enabled != nil {
		cfg.Web.Enabled = *s.WebClient.Enabled
	}
	if s.Logging.Level != "" {
		cfg.Log.Level = s.Logging.Level
	}
	if s.Logging.Format != "" {
		cfg.Log.Format = s.Logging.Format
	}
	return cfg
}

func renderChannel(ch v1alpha1.ChannelSpec) config.Namespace {
	ns := config.Namespace{
		Name:                   ch.Name,
		Presence:               ch.Presence,
		JoinLeave:              ch.JoinLeave,
		AllowPublish:           ch.AllowPublish,
		AllowSubscribe:         ch.AllowSubscribe,
		AllowAnonymous:         ch.AllowAnonymous,
		AllowAnonymousPublish:  ch.AllowAnonymousPublish,
		AllowAnonymousPresence: ch.AllowAnonymousPresence,
		AllowBinary:            ch.AllowBinary,
		AllowedDeltaTypes:      ch.AllowedDeltaTypes,
		Recovery:               ch.Recovery,
		Typing:                 ch.Typing,
		AllowHistory:           ch.AllowHistory,
		AllowPresence:          ch.AllowPresence,
		Personal:               ch.Personal,
		Group:                  ch.Group,
	}
	if h := ch.History; h != nil {
		ns.History.Size = int(h.Size)
		if h.TTL != nil {
			ns.History.TTL = config.Duration(h.TTL.Duration)
		}
	}
	return ns
}

// terminationGrace leaves the pod time for the preStop pause, the drain and a margin.
func terminationGrace(c Cluster) int64 {
	return int64((preStopPause + c.drainTimeout() + 5*time.Second) / time.Second)
}
