package storage

import "gorm.io/gorm"

func init() {
	register(migration{1, "directory, conversations, messages, event log, audio", func(tx *gorm.DB) error {
		if err := tx.Migrator().CreateTable(
			&User{}, &PublishedNumber{}, &Contact{}, &APIToken{},
			&Conversation{}, &Participant{}, &Message{}, &Event{},
			&Conference{}, &Leg{}, &Invitation{}, &IdempotencyRecord{},
		); err != nil {
			return err
		}
		// At most one active conference per conversation, enforced by the
		// database so two replicas (or two requests) cannot both start one.
		return tx.Exec(`CREATE UNIQUE INDEX ux_conference_active ON conferences (conversation_id) WHERE state = 'active'`).Error
	}})
}
