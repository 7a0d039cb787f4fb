package storage

import "gorm.io/gorm"

func init() {
	register(migration{23, "dial decisions on PostgreSQL: live legs by user and by conversation (partial indexes)", func(tx *gorm.DB) error {
		// A dial decision counts the live legs of its caller, their account
		// and the conversation; through these indexes PostgreSQL reads only
		// those legs, not every leg the user or the conversation ever had
		// (idx_legs_user_id, idx_legs_conversation_id) or every live leg of
		// the service (idx_legs_state). The states are migration 5's (the
		// planner uses a partial index only when the query's list matches
		// it; TestMigration5_… guards that). Not on SQLite: its one writer
		// would maintain them on every change of a leg's state, which cost
		// a quarter of its dial-outs per second (BenchmarkDialOut), and one
		// process there decides every dial anyway. Guests' legs are few:
		// ix_legs_guest_id serves them.
		if tx.Dialector.Name() != "postgres" {
			return nil
		}
		for _, col := range []string{"user_id", "conversation_id"} {
			if err := tx.Exec(`CREATE INDEX ix_leg_live_` + col + ` ON legs (` + col + `) WHERE state IN ` + liveStatesOfMigration5).Error; err != nil {
				return err
			}
		}
		return nil
	}})
}
