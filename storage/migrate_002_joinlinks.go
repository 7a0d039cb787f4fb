package storage

import "gorm.io/gorm"

func init() {
	register(migration{2, "join links, guests, join-attempt counters", func(tx *gorm.DB) error {
		if err := tx.Migrator().CreateTable(&JoinLink{}, &Guest{}, &JoinAttempt{}); err != nil {
			return err
		}
		// Legs and messages already have their guest_id column (migration
		// 1); a guest's live leg is looked up by it.
		return tx.Exec(`CREATE INDEX ix_legs_guest_id ON legs (guest_id)`).Error
	}})
}
