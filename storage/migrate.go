package storage

import (
	"context"
	"fmt"
	"sort"
	"time"

	"gorm.io/gorm"
)

// migration is one versioned schema step. Steps are append-only: a released
// step is never edited; a change to a model gets a new step that alters the
// table (Migrator().AddColumn, CreateIndex, …) so existing databases follow.
type migration struct {
	version int
	name    string
	up      func(tx *gorm.DB) error
}

// migrations are registered by the migrate_NNN_*.go files, one step each,
// and applied in version order.
var migrations []migration

func register(m migration) {
	for _, o := range migrations {
		if o.version == m.version {
			panic(fmt.Sprintf("migration %d registered twice (%s, %s)", m.version, o.name, m.name))
		}
	}
	migrations = append(migrations, m)
	sort.Slice(migrations, func(i, j int) bool { return migrations[i].version < migrations[j].version })
}

// migrate applies the missing steps in order, each in its own transaction,
// and records it in schema_migrations.
func (s *Store) migrate(ctx context.Context) error {
	db := s.db.WithContext(ctx)
	if s.dialect == "postgres" {
		// Several replicas may start at once: one migrates, the others wait.
		if err := db.Exec(`SELECT pg_advisory_lock(74117)`).Error; err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		defer db.Exec(`SELECT pg_advisory_unlock(74117)`)
	}
	if err := db.AutoMigrate(&SchemaMigration{}); err != nil {
		return fmt.Errorf("schema_migrations: %w", err)
	}
	var applied []SchemaMigration
	if err := db.Find(&applied).Error; err != nil {
		return err
	}
	done := map[int]bool{}
	for _, m := range applied {
		done[m.Version] = true
	}
	for _, m := range migrations {
		if done[m.version] {
			continue
		}
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := m.up(tx); err != nil {
				return err
			}
			return tx.Create(&SchemaMigration{Version: m.version, Name: m.name, AppliedAt: time.Now().UTC()}).Error
		})
		if err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		s.log.Info("schema migration applied", "version", m.version, "name", m.name)
	}
	return nil
}

// SchemaVersion is the highest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.q(ctx).Model(&SchemaMigration{}).Select("COALESCE(MAX(version), 0)").Scan(&v).Error
	return v, err
}
