package storage

import "gorm.io/gorm"

func init() {
	register(migration{24, "legs on PostgreSQL: fewer index entries per leg version", func(tx *gorm.DB) error {
		// A leg's change of state is not a HOT update (its state is in
		// the live partial indexes' predicates), so every version of the
		// row gets an entry in every index of legs: eleven, on the table
		// that is written most. Three of those entries bought nothing:
		// idx_legs_state (the live-state queries without a key read the
		// live partial indexes of migration 23 instead, and nothing looks
		// legs up by an ended state), and the NULL entries of guest_id for
		// every user's leg and of user_id for every guest's leg (no query
		// asks for a NULL one). SQLite keeps its indexes: it has no
		// partial live indexes (migration 23) to serve those queries.
		if tx.Dialector.Name() != "postgres" {
			return nil
		}
		for _, q := range []string{
			`DROP INDEX IF EXISTS idx_legs_state`,
			`DROP INDEX IF EXISTS ix_legs_guest_id`,
			`CREATE INDEX ix_legs_guest_id ON legs (guest_id) WHERE guest_id IS NOT NULL`,
			`DROP INDEX IF EXISTS idx_legs_user_id`,
			`CREATE INDEX idx_legs_user_id ON legs (user_id) WHERE user_id IS NOT NULL`,
		} {
			if err := tx.Exec(q).Error; err != nil {
				return err
			}
		}
		return nil
	}})
}
