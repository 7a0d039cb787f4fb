// Package history is the call history (issue 17): one leg's record after
// the fact (GET /api/v1/legs/{id}), a conversation's past conferences with
// their legs, the admins' call-detail-record export, and the retention that
// purges old records. It only reads what the engine wrote — legs keep
// their dial, ringing, answer and end times, cause and end reason — and
// deletes what is past its retention; no call is placed or changed here.
package history

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// DefaultRetention is how long call records are kept by default.
const DefaultRetention = 400 * 24 * time.Hour

// History reads and purges the call records.
type History struct {
	store     *storage.Store
	log       *slog.Logger
	retention time.Duration
}

// New makes the call history over store; records older than retention
// (default DefaultRetention) are purged by Run.
func New(store *storage.Store, lg *slog.Logger, retention time.Duration) *History {
	if retention <= 0 {
		retention = DefaultRetention
	}
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &History{store: store, log: lg, retention: retention}
}

// Who ended a call (LegRecord.EndedBy).
const (
	EndedByConvoice = "convoice" // we hung it up: end_reason says who asked
	EndedByRemote   = "remote"   // the called party or the network: cause says which
)

// LegRecord is one call as the history and the CDR show it.
type LegRecord struct {
	ID             string     `json:"id"`
	ConferenceID   string     `json:"conference_id"`
	ConversationID string     `json:"conversation_id"`
	UserID         *string    `json:"user_id,omitempty"`
	GuestID        *string    `json:"guest_id,omitempty"`
	DisplayName    string     `json:"display_name"`
	Number         string     `json:"number"`
	State          string     `json:"state"`
	Cause          int        `json:"cause"`
	CauseText      string     `json:"cause_text"`
	EndReason      string     `json:"end_reason,omitempty"`
	EndedBy        string     `json:"ended_by,omitempty"`
	DialedAt       time.Time  `json:"dialed_at"`
	RingingAt      *time.Time `json:"ringing_at,omitempty"`
	AnsweredAt     *time.Time `json:"answered_at,omitempty"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
	// DurationS is how long the call was answered, in whole seconds: from
	// the answer (with confirm-to-join: the pick-up, before the key) to the
	// end (to now while it is still up); 0 for a call never answered.
	DurationS int64 `json:"duration_s"`
}

// RecordOf is the record of a stored leg, durations as of now.
func RecordOf(r *storage.LegRecord, now time.Time) LegRecord {
	l := &r.Leg
	v := LegRecord{ID: l.ID, ConferenceID: l.ConferenceID, ConversationID: l.ConversationID, UserID: l.UserID,
		GuestID: l.GuestID, DisplayName: r.DisplayName, Number: l.Number, State: l.State, Cause: l.Cause,
		CauseText: l.CauseText, EndReason: l.EndReason, DialedAt: l.CreatedAt.UTC(),
		RingingAt: utc(l.RingingAt), AnsweredAt: utc(l.AnsweredAt), EndedAt: utc(l.EndedAt)}
	if v.AnsweredAt == nil {
		v.AnsweredAt = utc(l.ConnectedAt) // rows from before answered_at was kept
	}
	if v.AnsweredAt != nil {
		end := now
		if v.EndedAt != nil {
			end = *v.EndedAt
		}
		if d := end.Sub(*v.AnsweredAt); d > 0 {
			v.DurationS = int64(d / time.Second)
		}
	}
	if !storage.LegLive(l.State) {
		v.EndedBy = EndedByRemote
		if l.HangupRequested || l.EndReason != "" {
			v.EndedBy = EndedByConvoice
		}
	}
	return v
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// Leg answers GET /api/v1/legs/{id}: the leg's record for a present
// participant of its conversation, the guest whose call it is (guestID,
// "" for none) and admins; anyone else gets exactly the unknown-id answer.
func (h *History) Leg(ctx context.Context, a core.Actor, guestID, legID string) (LegRecord, error) {
	r, err := h.store.LegRecordByID(ctx, legID)
	if errors.Is(err, storage.ErrNotFound) {
		return LegRecord{}, core.NotFound("leg")
	}
	if err != nil {
		return LegRecord{}, err
	}
	switch {
	case guestID != "":
		if r.GuestID == nil || *r.GuestID != guestID {
			return LegRecord{}, core.NotFound("leg")
		}
	case a.Admin:
	default:
		if _, _, err := core.Member(ctx, h.store, a, r.ConversationID); err != nil {
			return LegRecord{}, core.NotFound("leg")
		}
	}
	return RecordOf(r, time.Now().UTC()), nil
}

// ConferenceRecord is one past (or the running) conference with its legs.
type ConferenceRecord struct {
	ID             string      `json:"id"`
	ConversationID string      `json:"conversation_id"`
	State          string      `json:"state"`
	StartedAt      time.Time   `json:"started_at"`
	EndedAt        *time.Time  `json:"ended_at,omitempty"`
	EndReason      string      `json:"end_reason,omitempty"`
	Legs           []LegRecord `json:"legs"`
}

// Page is one page of a conversation's audio history, newest first.
type Page struct {
	Conferences []ConferenceRecord `json:"conferences"`
	// NextCursor fetches the next (older) page; "" on the last.
	NextCursor string `json:"next_cursor"`
}

const (
	defaultPage = 20
	maxPage     = 100
)

// Conversation answers GET /api/v1/conversations/{id}/audio/history for
// participants and admins: the conversation's conferences, newest first,
// limit (default 20, at most 100) per page, from cursor ("" the newest).
func (h *History) Conversation(ctx context.Context, a core.Actor, convID, cursor string, limit int) (Page, error) {
	if !a.Admin {
		if _, _, err := core.Member(ctx, h.store, a, convID); err != nil {
			return Page{}, err
		}
	} else if _, err := h.store.GetConversation(ctx, convID); errors.Is(err, storage.ErrNotFound) {
		return Page{}, core.NotFound("conversation")
	} else if err != nil {
		return Page{}, err
	}
	if limit <= 0 {
		limit = defaultPage
	}
	if limit > maxPage {
		return Page{}, core.Invalid("limit", "limit: at most %d", maxPage)
	}
	before, beforeID, err := decodeCursor(cursor)
	if err != nil {
		return Page{}, err
	}
	confs, more, err := h.store.ConferencesBefore(ctx, convID, before, beforeID, limit)
	if err != nil {
		return Page{}, err
	}
	ids := make([]string, len(confs))
	for i := range confs {
		ids[i] = confs[i].ID
	}
	legs, err := h.store.LegRecordsOf(ctx, ids)
	if err != nil {
		return Page{}, err
	}
	now := time.Now().UTC()
	byConf := map[string][]LegRecord{}
	for i := range legs {
		byConf[legs[i].ConferenceID] = append(byConf[legs[i].ConferenceID], RecordOf(&legs[i], now))
	}
	page := Page{Conferences: make([]ConferenceRecord, 0, len(confs))}
	for _, c := range confs {
		ls := byConf[c.ID]
		if ls == nil {
			ls = []LegRecord{}
		}
		page.Conferences = append(page.Conferences, ConferenceRecord{ID: c.ID, ConversationID: c.ConversationID,
			State: c.State, StartedAt: c.CreatedAt.UTC(), EndedAt: utc(c.EndedAt), EndReason: c.EndReason, Legs: ls})
	}
	if more {
		last := confs[len(confs)-1]
		page.NextCursor = encodeCursor(last.CreatedAt, last.ID)
	}
	return page, nil
}

// The cursor is opaque to clients: the last conference's start and id.
func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t.UTC().Format(time.RFC3339Nano) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	if c == "" {
		return time.Time{}, "", nil
	}
	bad := core.Invalid("cursor", "cursor: not one this API gave")
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", bad
	}
	return t, id, nil
}

// exportPage is how many legs the export reads per query.
const exportPage = 500

// Export hands every leg dialed in [from, to) to emit, oldest first,
// reading in pages (admins only; checked before emit is first called).
func (h *History) Export(ctx context.Context, a core.Actor, from, to time.Time, emit func(LegRecord) error) error {
	if err := core.RequireAdmin(a); err != nil {
		return err
	}
	if !to.After(from) {
		return core.Invalid("to", "to: must be after from")
	}
	now := time.Now().UTC()
	var after time.Time
	afterID := ""
	for {
		rs, err := h.store.LegRecordsBetween(ctx, from, to, after, afterID, exportPage)
		if err != nil {
			return err
		}
		for i := range rs {
			if err := emit(RecordOf(&rs[i], now)); err != nil {
				return err
			}
		}
		if len(rs) < exportPage {
			return nil
		}
		after, afterID = rs[len(rs)-1].CreatedAt, rs[len(rs)-1].ID
	}
}

// purgeEvery is how often Run looks for records past their retention.
const purgeEvery = time.Hour

// Run purges conferences that ended longer than the retention ago, with
// their legs and invitations (and older entries of the own streams), at start and then every hour, until ctx is
// done. Every replica may run it: a purge is idempotent.
func (h *History) Run(ctx context.Context) {
	for {
		h.Purge(ctx, time.Now().UTC())
		select {
		case <-ctx.Done():
			return
		case <-time.After(purgeEvery):
		}
	}
}

// Purge deletes the records that ended before now minus the retention, in
// batches, and reports how many conferences went.
func (h *History) Purge(ctx context.Context, now time.Time) int {
	total := 0
	cut := now.Add(-h.retention)
	for ctx.Err() == nil {
		n, err := h.store.PurgeHistory(storage.LowPriority(ctx), cut, 200)
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("purging old call records failed", "err", err)
			}
			break
		}
		total += n
		if n < 200 {
			break
		}
	}
	if total > 0 {
		h.log.Info("old call records purged", "conferences", total, "ended_before", cut)
	}
	// The index of people's own streams goes with the same retention.
	if _, err := h.store.PurgeUserEvents(storage.LowPriority(ctx), cut); err != nil && ctx.Err() == nil {
		h.log.Warn("purging old entries of the own streams failed", "err", err)
	}
	return total
}
