package storage

import "gorm.io/gorm"

// liveStatesOfMigration5 is the live set migration 5 wrote into the partial
// unique indexes, spelled out because a released migration never changes;
// TestMigration5_IndexesTheTablesLiveStates fails when the table's live
// states move away from it, asking for a new migration.
const liveStatesOfMigration5 = "('dialing', 'ringing', 'confirming', 'connected')"

func init() {
	register(migration{5, "the leg table: confirming is live, answered_at", func(tx *gorm.DB) error {
		// Migration 1 creates the legs table from the model of the day, so
		// a fresh database already has the column.
		if !tx.Migrator().HasColumn(&Leg{}, "AnsweredAt") {
			if err := tx.Migrator().AddColumn(&Leg{}, "AnsweredAt"); err != nil {
				return err
			}
		}
		// One live leg per user and per guest in a conference (migration
		// 4), now with the confirming state in the live set.
		for _, ix := range []struct{ name, col string }{{"ux_leg_live_user", "user_id"}, {"ux_leg_live_guest", "guest_id"}} {
			if err := tx.Exec(`DROP INDEX IF EXISTS ` + ix.name).Error; err != nil {
				return err
			}
			if err := tx.Exec(`CREATE UNIQUE INDEX ` + ix.name + ` ON legs (conference_id, ` + ix.col + `)
 WHERE ` + ix.col + ` IS NOT NULL AND state IN ` + liveStatesOfMigration5).Error; err != nil {
				return err
			}
		}
		return nil
	}})
}
