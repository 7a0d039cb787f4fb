package storage

import "gorm.io/gorm"

func init() {
	register(migration{20, "per-user event streams (an index into the conversations' logs)", func(tx *gorm.DB) error {
		return tx.Migrator().CreateTable(&UserEvent{}, &UserEventSeq{})
	}})
}
