// Package pbx is the contract between the controller and a PBX: Driver, events, routes, backoff; the two drivers live below it.
// Never emulators, storage or controller code here: drivers import pbx, pbx imports none of them.
//
// The model is deliberately small: a conference is a mixing room named by our
// own id, a leg is one call placed by the PBX into that room, also named by
// our own id (the ARI channel id / FreeSWITCH origination_uuid). Because both
// ids are ours, every event maps back to its leg without a lookup race, even
// when the PBX's first event beats the answer to the request that caused it.
package pbx

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors drivers wrap with %w so the controller can decide what to
// tell the user without knowing the PBX kind.
var (
	// ErrUnavailable: the PBX cannot be reached (connection down, half-open,
	// not booted, timed out). The controller answers 503.
	ErrUnavailable = errors.New("pbx unavailable")
	// ErrNotFound: the PBX does not know the leg or the conference (already
	// gone). Hangup and EndConference treat it as success.
	ErrNotFound = errors.New("pbx: no such leg or conference")
	// ErrExists: the id is already in use on the PBX (ARI 409 on our own
	// channel id). For Dial this means "already done": the leg was dialed.
	ErrExists = errors.New("pbx: id already exists")
	// ErrRefused: the PBX refused the request (ARI 4xx/500 "Allocation
	// failed", FreeSWITCH -ERR). The leg cannot be placed; the message of the
	// wrapping error says why.
	ErrRefused = errors.New("pbx refused the request")
	// ErrNotReady: the leg exists but cannot take the operation yet (ARI 409
	// / 422 "Channel not in Stasis application" for a leg still ringing).
	ErrNotReady = errors.New("pbx: leg not ready for that operation")
)

// DialRequest asks the PBX to call one number into one conference.
type DialRequest struct {
	// LegID is our id for the call; the driver uses it as the PBX channel id
	// (ARI POST /channels/{LegID}) or origination_uuid (FreeSWITCH).
	LegID string
	// ConferenceID is our id for the room; the driver uses it as the bridge
	// id / conference room name.
	ConferenceID string
	// Number is a validated E.164 number ("+12025550123") or a configured
	// internal extension ("1001"). Drivers put it into a dial string through
	// their configured routes; they never see unvalidated user input.
	Number string
	// CallerIDName and CallerIDNumber are what the called phone displays.
	CallerIDName   string
	CallerIDNumber string
	// RingTimeout is how long the PBX lets the phone ring before giving up
	// (cause 19). Zero means the driver's default.
	RingTimeout time.Duration
	// Confirm, when set, keeps an answered leg out of the mix until the
	// callee presses Confirm.Key (confirm-to-join: a voicemail box or an
	// answering machine that picks up never joins). Nil: answering joins.
	Confirm *Confirm
}

// Confirm is how an answered leg proves a person is there: the driver plays
// Prompt on the answered call and waits Timeout for Key, Tries times in all;
// on the key it moves the leg into the conference (EventConnected), without
// it it hangs the call up (EventEnded; the controller reads "answered, never
// confirmed" from the leg having been EventAnswered). Other keys, a key
// pressed while the prompt still plays and a second press do no harm.
type Confirm struct {
	// Key is the DTMF key that joins, "1" by default.
	Key string
	// Timeout is how long one try waits for the key after its prompt.
	Timeout time.Duration
	// Tries is how often the prompt is played (2: repeated once).
	Tries int
	// Prompt is the sound to play, in the PBX's own terms: an ARI media URI
	// ("sound:conf-getpin") for Asterisk, a file or tone_stream:// for
	// FreeSWITCH. Empty means the driver's default, which exists in a stock
	// install of that PBX's English sounds.
	Prompt string
}

// EventType says what happened to a leg or to the connection.
type EventType string

const (
	// EventRinging: the called phone is alerting (180). Early media (183) is
	// reported as ringing too, never as answered.
	EventRinging EventType = "ringing"
	// EventConnected: the phone answered and the leg is in the mix. The
	// driver itself moves an answered leg into the conference; the controller
	// only ever hears "connected".
	EventConnected EventType = "connected"
	// EventAnswered: the phone answered but is not in the mix yet: it hears
	// the confirm-to-join prompt (DialRequest.Confirm). EventConnected
	// follows when the key is pressed, EventEnded when it never is.
	EventAnswered EventType = "answered"
	// EventEnded: the leg is gone from the PBX. Cause holds the Q.850 cause of
	// the final event (ARI ChannelDestroyed.cause; FreeSWITCH
	// Hangup-Cause mapped to its Q.850 number).
	EventEnded EventType = "ended"
	// EventTalkingStarted / EventTalkingFinished: voice activity on the leg.
	EventTalkingStarted  EventType = "talking_started"
	EventTalkingFinished EventType = "talking_finished"
	// EventLinkUp: the event connection to the PBX is (re)established. Events
	// may have been missed before it: the controller resyncs with Snapshot.
	EventLinkUp EventType = "link_up"
	// EventLinkDown: the event connection is lost; Reason says why.
	EventLinkDown EventType = "link_down"
	// EventPBXRestarted: the PBX lost every call (restart, crash). The
	// controller ends every leg it believes live on this PBX.
	EventPBXRestarted EventType = "pbx_restarted"
	// EventLost: the driver dropped or could not decode an event. The
	// controller resyncs.
	EventLost EventType = "lost"
)

// Event is one thing the PBX told us, already mapped onto our ids.
type Event struct {
	Type         EventType
	LegID        string // empty for link events
	ConferenceID string // when known
	// Cause is the Q.850 cause for EventEnded (0 when the PBX gave none).
	Cause int
	// CauseText is the PBX's own words for the cause ("User busy",
	// "USER_BUSY"), kept beside the number for people reading the record.
	CauseText string
	// Reason explains link events and synthesised ends ("pbx restarted").
	Reason string
	At     time.Time
}

// Handler receives the events of one driver. Events of one leg are delivered
// in the order the PBX sent them; HandleEvent may block (it is the driver's
// back-pressure), but must not call back into the driver synchronously for
// the same leg in a way that waits on event delivery.
type Handler interface {
	HandleEvent(Event)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(Event)

// HandleEvent calls f(e).
func (f HandlerFunc) HandleEvent(e Event) { f(e) }

// LegSnapshot is what the PBX holds for one of our legs right now.
type LegSnapshot struct {
	LegID        string
	ConferenceID string // the room it is in or was dialed for, when known
	// Answered: the far end picked up. InConference: it is in the mix.
	Answered     bool
	InConference bool
	Muted        bool
}

// Snapshot is the PBX's view of everything of ours, for resync.
type Snapshot struct {
	Legs        []LegSnapshot
	Conferences []string
	At          time.Time
}

// Status is a driver's health as the supervisor sees it.
type Status struct {
	Ready bool `json:"ready"`
	// Detail says why not ready ("connecting", "auth rejected", "no answer to
	// ping for 5s", …) or what is connected.
	Detail string `json:"detail"`
	// Since is when Ready last changed.
	Since time.Time `json:"since"`
	// Reconnects counts event-connection re-establishments since start.
	Reconnects int64 `json:"reconnects"`
	// LostEvents counts events dropped or undecodable since start.
	LostEvents int64 `json:"lost_events"`
}

// Driver is one PBX node. All methods are safe for concurrent use and honour
// ctx deadlines; a driver applies its own timeout to every PBX request too.
type Driver interface {
	// Kind is "asterisk" or "freeswitch" (emulators report the kind they
	// emulate).
	Kind() string
	// Run connects, keeps the event connection up (reconnecting with
	// backoff), and delivers events to h until ctx is cancelled. It returns
	// only when ctx is done or the configuration can never work.
	Run(ctx context.Context, h Handler) error
	// Status reports readiness; cheap, never blocks.
	Status() Status

	// CreateConference makes sure the mixing room exists. Idempotent.
	CreateConference(ctx context.Context, conferenceID string) error
	// Dial places one call into a conference. It returns once the PBX has
	// accepted the request (ARI 200 "Down"); progress comes as events.
	// ErrExists means a call with this LegID was already placed.
	Dial(ctx context.Context, req DialRequest) error
	// Hangup ends one leg, ringing or connected. ErrNotFound when gone.
	Hangup(ctx context.Context, legID string) error
	// SetMute mutes or unmutes what the leg says into the conference.
	SetMute(ctx context.Context, conferenceID, legID string, muted bool) error
	// EndConference hangs up every leg in the room and destroys it, leaving
	// nothing on the PBX. An unknown room is not an error.
	EndConference(ctx context.Context, conferenceID string) error
	// Snapshot reads what the PBX holds of ours, for resync.
	Snapshot(ctx context.Context) (Snapshot, error)
}

// Passive is implemented by drivers that can serve commands without holding
// the node's event connection: with several convoice replicas, one of them
// (the holder of the node's lease) runs Run, the others RunPassive.
type Passive interface {
	// RunPassive keeps whatever the commands (CreateConference, Dial,
	// Hangup, SetMute, EndConference, Snapshot) need, without subscribing
	// to events, until ctx is done; Status reports readiness from a cheap
	// periodic probe. No event is ever delivered. Run and RunPassive never
	// run at the same time on one driver: the caller stops one (and waits
	// for it to return) before it starts the other.
	RunPassive(ctx context.Context) error
}

// Q.850 causes the controller and drivers name.
const (
	CauseUnknown           = 0
	CauseUnallocated       = 1
	CauseNormalClearing    = 16
	CauseUserBusy          = 17
	CauseNoUserResponse    = 18
	CauseNoAnswer          = 19
	CauseCallRejected      = 21
	CauseNormalUnspecified = 31
	CauseNoCircuit         = 34
	CauseNetworkOutOfOrder = 38
	CauseTempFailure       = 41
	CauseCongestion        = 42
)
