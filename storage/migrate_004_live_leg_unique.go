package storage

import "gorm.io/gorm"

func init() {
	register(migration{4, "one live leg per user and per guest in a conference", func(tx *gorm.DB) error {
		// The database, not a read before the insert, guarantees that a
		// double click (or two replicas) never rings the same person twice:
		// on PostgreSQL two transactions can both read "no live leg".
		if err := tx.Exec(`CREATE UNIQUE INDEX ux_leg_live_user ON legs (conference_id, user_id)
 WHERE user_id IS NOT NULL AND state IN ('dialing', 'ringing', 'connected')`).Error; err != nil {
			return err
		}
		return tx.Exec(`CREATE UNIQUE INDEX ux_leg_live_guest ON legs (conference_id, guest_id)
 WHERE guest_id IS NOT NULL AND state IN ('dialing', 'ringing', 'connected')`).Error
	}})
}
