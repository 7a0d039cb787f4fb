package storage

import "gorm.io/gorm"

func init() {
	register(migration{22, "call history: legs by dial time (CDR export), conferences by end (retention)", func(tx *gorm.DB) error {
		if err := tx.Exec(`CREATE INDEX ix_leg_created ON legs (created_at, id)`).Error; err != nil {
			return err
		}
		return tx.Exec(`CREATE INDEX ix_conference_ended ON conferences (ended_at)`).Error
	}})
}
