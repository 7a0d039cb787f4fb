package storage

import "gorm.io/gorm"

func init() {
	register(migration{6, "dial grants name the account that answers for them", func(tx *gorm.DB) error {
		// Migration 3 creates the table from the model of the day, so a
		// fresh database already has the column and its index.
		if !tx.Migrator().HasColumn(&DialGrant{}, "Account") {
			if err := tx.Migrator().AddColumn(&DialGrant{}, "Account"); err != nil {
				return err
			}
		}
		if err := tx.Exec(`CREATE INDEX IF NOT EXISTS ix_dial_grant_account ON dial_grants (account, at)`).Error; err != nil {
			return err
		}
		// An account's live legs include those of the guests of its links.
		return tx.Exec(`CREATE INDEX IF NOT EXISTS idx_join_links_created_by ON join_links (created_by)`).Error
	}})
}
