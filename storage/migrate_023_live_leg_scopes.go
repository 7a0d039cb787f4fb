package storage

import "gorm.io/gorm"

func init() {
	register(migration{23, "dial decisions: live legs by user, guest and conversation (partial indexes)", func(tx *gorm.DB) error {
		// A dial decision counts the live legs of its caller, their account
		// (the user and their link guests) and the conversation; through
		// these indexes it reads only those legs, not every live leg of
		// the service (idx_legs_state) or every leg the user ever had. The
		// states are migration 5's (the planner uses a partial index only
		// when the query's list matches it; TestMigration5_… guards that).
		for _, col := range []string{"user_id", "guest_id", "conversation_id"} {
			if err := tx.Exec(`CREATE INDEX ix_leg_live_` + col + ` ON legs (` + col + `) WHERE state IN ` + liveStatesOfMigration5).Error; err != nil {
				return err
			}
		}
		return nil
	}})
}
