package storage

// Call history (issue 17): past conferences and their legs, read for the
// history of a conversation, one leg's record and the CDR export, and
// purged after the retention period. Legs keep their times (created,
// ringing, connected, ended), so a call detail record is a leg row.

import (
	"context"
	"time"
)

// LegRecord is a leg with the display name of who was called (the user's
// or the guest's; "" for neither).
type LegRecord struct {
	Leg
	DisplayName string
}

const legRecordSelect = `SELECT l.*, COALESCE(u.display_name, g.display_name, '') AS display_name FROM legs l
 LEFT JOIN users u ON u.id = l.user_id LEFT JOIN guests g ON g.id = l.guest_id `

func (s *Store) legRecords(ctx context.Context, where string, args ...any) ([]LegRecord, error) {
	rows, err := s.q(ctx).Raw(legRecordSelect+where, args...).Rows()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LegRecord
	for rows.Next() {
		var r LegRecord
		if err := s.q(ctx).ScanRows(rows, &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// LegRecordByID loads one leg with its name.
func (s *Store) LegRecordByID(ctx context.Context, id string) (*LegRecord, error) {
	rs, err := s.legRecords(ctx, `WHERE l.id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, ErrNotFound
	}
	return &rs[0], nil
}

// LegRecordsOf lists the legs of the given conferences, by conference and
// dial time.
func (s *Store) LegRecordsOf(ctx context.Context, confIDs []string) ([]LegRecord, error) {
	if len(confIDs) == 0 {
		return nil, nil
	}
	return s.legRecords(ctx, `WHERE l.conference_id IN ? ORDER BY l.conference_id, l.created_at, l.id`, confIDs)
}

// ConferencesBefore lists up to limit conferences of a conversation,
// newest first, older than the cursor (created_at, id) when beforeID is
// set, and whether there are more.
func (s *Store) ConferencesBefore(ctx context.Context, convID string, before time.Time, beforeID string, limit int) ([]Conference, bool, error) {
	var cs []Conference
	q := s.q(ctx).Where("conversation_id = ?", convID)
	if beforeID != "" {
		q = q.Where("created_at < ? OR (created_at = ? AND id < ?)", before, before, beforeID)
	}
	if err := q.Order("created_at DESC, id DESC").Limit(limit + 1).Find(&cs).Error; err != nil {
		return nil, false, err
	}
	more := len(cs) > limit
	if more {
		cs = cs[:limit]
	}
	return cs, more, nil
}

// LegRecordsBetween lists up to limit legs dialed in [from, to), oldest
// first, after the cursor (created_at, id) when afterID is set (the CDR
// export reads in pages).
func (s *Store) LegRecordsBetween(ctx context.Context, from, to time.Time, after time.Time, afterID string, limit int) ([]LegRecord, error) {
	if afterID == "" {
		return s.legRecords(ctx, `WHERE l.created_at >= ? AND l.created_at < ? ORDER BY l.created_at, l.id LIMIT ?`, from, to, limit)
	}
	return s.legRecords(ctx, `WHERE l.created_at >= ? AND l.created_at < ? AND (l.created_at > ? OR (l.created_at = ? AND l.id > ?))
 ORDER BY l.created_at, l.id LIMIT ?`, from, to, after, after, afterID, limit)
}

// PurgeHistory deletes up to limit conferences that ended before t, with
// their legs and invitations, and reports how many conferences went.
func (s *Store) PurgeHistory(ctx context.Context, t time.Time, limit int) (int, error) {
	var n int
	err := s.InTx(ctx, func(tx *Store) error {
		var ids []string
		if err := tx.q(ctx).Model(&Conference{}).Where("state = ? AND ended_at < ?", ConferenceEnded, t).
			Order("ended_at").Limit(limit).Pluck("id", &ids).Error; err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		if err := tx.q(ctx).Where("conference_id IN ?", ids).Delete(&Invitation{}).Error; err != nil {
			return err
		}
		// Only calls that have ended (whatever the state machine's live
		// states are): a conference keeps any call still on its way out.
		if err := tx.q(ctx).Where("conference_id IN ? AND ended_at IS NOT NULL", ids).
			Delete(&Leg{}).Error; err != nil {
			return err
		}
		res := tx.q(ctx).Where("id IN ? AND NOT EXISTS (SELECT 1 FROM legs WHERE legs.conference_id = conferences.id)", ids).Delete(&Conference{})
		n = int(res.RowsAffected)
		return res.Error
	})
	return n, err
}
