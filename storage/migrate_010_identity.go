package storage

import "gorm.io/gorm"

func init() {
	register(migration{10, "identity: token expiry, provisioned users, web sessions, auth failures", func(tx *gorm.DB) error {
		// Migration 1 creates its tables from today's models, so a new
		// database has these columns already; an old one gets them here.
		m := tx.Migrator()
		add := func(model any, cols ...string) error {
			for _, col := range cols {
				if m.HasColumn(model, col) {
					continue
				}
				if err := m.AddColumn(model, col); err != nil {
					return err
				}
			}
			return nil
		}
		if err := add(&User{}, "Source", "ExternalID", "DeactivatedAt", "RemovedAt"); err != nil {
			return err
		}
		if err := add(&APIToken{}, "ExpiresAt"); err != nil {
			return err
		}
		return m.CreateTable(&Session{}, &AuthFailure{})
	}})
}
