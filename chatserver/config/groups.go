package config

import (
	"regexp"
	"strconv"
	"time"
)

// Groups limits what users may do with groups (namespaces with Group set).
// Every zero field takes the default below, so a config without the key
// renders as before and rolls no pod.
type Groups struct {
	// MembersPerGroup caps a group's members (default 1000).
	MembersPerGroup int `json:"membersPerGroup,omitempty"`
	// GroupsPerUser caps the groups one user belongs to (default 500).
	GroupsPerUser int `json:"groupsPerUser,omitempty"`
	// InvitesPerHour caps the invites (and adds) one user makes per hour,
	// across replicas (default 100).
	InvitesPerHour int `json:"invitesPerHour,omitempty"`
	// SearchesPerMinute caps one user's search requests per minute on a
	// replica (default 30).
	SearchesPerMinute int `json:"searchesPerMinute,omitempty"`
	// SearchLanguage is the PostgreSQL text search configuration used to
	// index and query messages ("english", "german", "simple" …; default
	// "simple": no stemming, works for every language).
	SearchLanguage string `json:"searchLanguage,omitempty"`
	// MaxMuteDuration caps a moderator's mute (default 30 days).
	MaxMuteDuration Duration `json:"maxMuteDuration,omitempty"`
}

// Defaults of Groups.
const (
	DefaultMembersPerGroup   = 1000
	DefaultGroupsPerUser     = 500
	DefaultInvitesPerHour    = 100
	DefaultSearchesPerMinute = 30
	DefaultSearchLanguage    = "simple"
	DefaultMaxMuteDuration   = 30 * 24 * time.Hour
)

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// Members is MembersPerGroup or its default.
func (g Groups) Members() int { return orDefault(g.MembersPerGroup, DefaultMembersPerGroup) }

// PerUser is GroupsPerUser or its default.
func (g Groups) PerUser() int { return orDefault(g.GroupsPerUser, DefaultGroupsPerUser) }

// Invites is InvitesPerHour or its default.
func (g Groups) Invites() int { return orDefault(g.InvitesPerHour, DefaultInvitesPerHour) }

// Searches is SearchesPerMinute or its default.
func (g Groups) Searches() int { return orDefault(g.SearchesPerMinute, DefaultSearchesPerMinute) }

// Language is SearchLanguage or its default.
func (g Groups) Language() string {
	if g.SearchLanguage != "" {
		return g.SearchLanguage
	}
	return DefaultSearchLanguage
}

// MaxMute is MaxMuteDuration or its default.
func (g Groups) MaxMute() time.Duration {
	if g.MaxMuteDuration > 0 {
		return g.MaxMuteDuration.D()
	}
	return DefaultMaxMuteDuration
}

// searchLanguage is what a text search configuration's name looks like
// (it reaches SQL as a regconfig parameter, never as text of the query).
var searchLanguage = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c Config) validateGroups(bad func(key, format string, args ...any)) {
	g := c.Groups
	for key, v := range map[string]int{
		"groups.membersPerGroup": g.MembersPerGroup, "groups.groupsPerUser": g.GroupsPerUser,
		"groups.invitesPerHour": g.InvitesPerHour, "groups.searchesPerMinute": g.SearchesPerMinute,
	} {
		if v < 0 {
			bad(key, "must not be negative")
		}
	}
	if g.SearchLanguage != "" && !searchLanguage.MatchString(g.SearchLanguage) {
		bad("groups.searchLanguage", "%q is not a text search configuration name (e.g. english, simple)", g.SearchLanguage)
	}
	if g.MaxMuteDuration < 0 {
		bad("groups.maxMuteDuration", "must not be negative")
	}
	for i, ns := range c.Namespaces {
		if !ns.Group {
			continue
		}
		key := "namespaces[" + strconv.Itoa(i) + "]"
		if ns.Name == "" {
			bad(key+".group", "a group namespace needs a name")
		}
		if ns.Personal {
			bad(key+".group", "a namespace cannot be both personal and group")
		}
		if ns.AllowAnonymous {
			bad(key+".allowAnonymous", "a group namespace admits members only: anonymous users are never members")
		}
		if ns.AllowSubscribe == "token" {
			bad(key+".allowSubscribe", "a group namespace decides subscribe by membership, not by token")
		}
	}
}
