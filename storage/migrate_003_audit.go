package storage

import "gorm.io/gorm"

func init() {
	register(migration{3, "audit log and dial grants (dial policy counters)", func(tx *gorm.DB) error {
		return tx.Migrator().CreateTable(&AuditEntry{}, &DialGrant{})
	}})
}
