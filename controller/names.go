package controller

import (
	"github.com/nyaruka/phonenumbers"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/controller/audio"
	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/conversations"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/directory"
	"github.com/convoice/convoice/controller/engine"
	"github.com/convoice/convoice/controller/guests"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/storage"
)

// The names the api layer and cmd use, each defined by the part it belongs
// to: api and cmd import controller alone.

// Wiring and the PBX nodes (engine).
type (
	Config     = engine.Config
	Node       = engine.Node
	NodeStatus = engine.NodeStatus
	Metrics    = engine.Metrics
	DialCheck  = engine.DialCheck
)

// Confirm-to-join (engine): who must press a key before joining the mix.
type ConfirmConfig = engine.ConfirmConfig

// Confirm-to-join modes and defaults.
const (
	ConfirmOff            = engine.ConfirmOff
	ConfirmMobile         = engine.ConfirmMobile
	ConfirmAll            = engine.ConfirmAll
	DefaultConfirmKey     = engine.DefaultConfirmKey
	DefaultConfirmTimeout = engine.DefaultConfirmTimeout
)

// ParseConfirmMode reads off, mobile or all.
func ParseConfirmMode(s string) (string, error) { return engine.ParseConfirmMode(s) }

// NewMetrics makes the engine's Prometheus series, registered on reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics { return engine.NewMetrics(reg) }

// The shared vocabulary (core).
type (
	Error          = core.Error
	Kind           = core.Kind
	Actor          = core.Actor
	Hub            = core.Hub
	Subscription   = core.Subscription
	Event          = core.Event
	LegView        = core.LegView
	InvitationView = core.InvitationView
	ConferenceView = core.ConferenceView
	ConferenceRef  = core.ConferenceRef
	JoinResult     = core.JoinResult
)

// Error kinds; the API maps each to one HTTP status.
const (
	KindInvalid      = core.KindInvalid
	KindUnauthorized = core.KindUnauthorized
	KindForbidden    = core.KindForbidden
	KindNotFound     = core.KindNotFound
	KindConflict     = core.KindConflict
	KindRateLimited  = core.KindRateLimited
	KindPBXRefused   = core.KindPBXRefused
	KindUnavailable  = core.KindUnavailable
)

// NewHub makes an empty event hub.
func NewHub() *Hub { return core.NewHub() }

// AsError finds the *Error in err's chain.
func AsError(err error) (*Error, bool) { return core.AsError(err) }

// NewID returns a new time-ordered id (UUID version 7).
func NewID() string { return core.NewID() }

// NewSecret returns a token of 256 random bits, URL-safe.
func NewSecret() string { return core.NewSecret() }

// HashSecret is how tokens are stored: SHA-256, hex.
func HashSecret(s string) string { return core.HashSecret(s) }

// The dial policy and numbers (policy).
type (
	PolicyConfig = policy.Config
	Numbers      = policy.Numbers
)

// Unlimited, as a PolicyConfig limit, switches that limit off.
const Unlimited = policy.Unlimited

// The codes of dial refusals.
const (
	RuleNumberNotAllowed     = policy.RuleNumberNotAllowed
	RuleCountryNotAllowed    = policy.RuleCountryNotAllowed
	RuleNumberTypeNotAllowed = policy.RuleNumberTypeNotAllowed
	RuleExtensionNotAllowed  = policy.RuleExtensionNotAllowed
	RuleTooManyCalls         = policy.RuleTooManyCalls
	RuleRateLimited          = policy.RuleRateLimited
)

// The default number type lists of the policy.
var (
	DefaultBlockedTypes = policy.DefaultBlockedTypes
	DefaultGuestTypes   = policy.DefaultGuestTypes
)

// ParseCountries reads a comma-separated list of regions and calling codes.
func ParseCountries(s string) ([]string, error) { return policy.ParseCountries(s) }

// ParseNumberTypes reads a comma-separated list of number type names.
func ParseNumberTypes(s string) ([]phonenumbers.PhoneNumberType, error) {
	return policy.ParseNumberTypes(s)
}

// ParsePrefixes reads a comma-separated list of number prefixes.
func ParsePrefixes(s string) ([]string, error) { return policy.ParsePrefixes(s) }

// NumberTypeNames lists the number type names ParseNumberTypes knows.
func NumberTypeNames() []string { return policy.NumberTypeNames() }

// NumberTypeName names a number type as the configuration does.
func NumberTypeName(t phonenumbers.PhoneNumberType) string { return policy.NumberTypeName(t) }

// The audit log (audit).
type (
	AuditEntry  = audit.Entry
	AuditRecord = audit.Record
	AuditQuery  = audit.Query
	AuditPage   = audit.Page
)

// Audit actions.
const (
	ActionDial           = audit.ActionDial
	ActionDialRefused    = audit.ActionDialRefused
	ActionLegMute        = audit.ActionLegMute
	ActionLegUnmute      = audit.ActionLegUnmute
	ActionLegHangup      = audit.ActionLegHangup
	ActionAudioEnd       = audit.ActionAudioEnd
	ActionAuthFailed     = audit.ActionAuthFailed
	ActionUserCreate     = audit.ActionUserCreate
	ActionTokenIssue     = audit.ActionTokenIssue
	ActionTokenRevoke    = audit.ActionTokenRevoke
	ActionJoinLinkCreate = audit.ActionJoinLinkCreate
	ActionJoinLinkRevoke = audit.ActionJoinLinkRevoke
	ActionGuestJoin      = guests.ActionGuestJoin
	ActionGuestAdmit     = guests.ActionGuestAdmit
	ActionGuestRefuse    = guests.ActionGuestRefuse
)

// The directory (directory).
type (
	NumberInput = directory.NumberInput
	NewUser     = directory.NewUser
	IssuedToken = directory.IssuedToken
	NumberView  = directory.NumberView
	ContactView = directory.ContactView
	UserView    = directory.UserView
	MeView      = directory.MeView
)

// Conversations and messages (conversations).
type (
	NewConversation  = conversations.NewConversation
	ConversationView = conversations.ConversationView
	ParticipantView  = conversations.ParticipantView
	MessageView      = conversations.MessageView
	MessagePage      = conversations.MessagePage
	MessageQuery     = conversations.MessageQuery
)

// RoleGuest is the role of an admitted guest in a conversation view.
const RoleGuest = conversations.RoleGuest

// Conferences and invitations (audio).
type (
	JoinRequest      = audio.JoinRequest
	InvitationResult = audio.InvitationResult
)

// Join links and guests (guests).
type (
	NewJoinLink       = guests.NewJoinLink
	JoinLinkView      = guests.JoinLinkView
	CreatedJoinLink   = guests.CreatedJoinLink
	JoinLinkInfo      = guests.JoinLinkInfo
	GuestView         = guests.GuestView
	GuestJoin         = guests.GuestJoin
	GuestJoinResult   = guests.GuestJoinResult
	AdmitResult       = guests.AdmitResult
	GuestActor        = guests.GuestActor
	GuestConversation = guests.GuestConversation
	GuestSessionView  = guests.GuestSessionView
	GuestStream       = guests.GuestStream
	RetryAfterError   = guests.RetryAfterError
)

// Join link states, and the join attempts allowed per client address.
const (
	LinkActive     = guests.LinkActive
	LinkExpired    = guests.LinkExpired
	LinkUsedUp     = guests.LinkUsedUp
	LinkRevoked    = guests.LinkRevoked
	JoinRateLimit  = guests.JoinRateLimit
	JoinRateWindow = guests.JoinRateWindow
)

// ErrStorageFull is the store's "no room left on the database's disk": the
// API answers 507 storage_full (nothing of the request was kept).
var ErrStorageFull = storage.ErrStorageFull

// DatabaseUnreachable reports whether err is the database being out of
// reach (a partition, a restart): the API answers 503
// database_unavailable.
func DatabaseUnreachable(err error) bool { return storage.IsUnreachable(err) }
