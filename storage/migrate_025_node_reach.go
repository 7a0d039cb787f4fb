package storage

import "gorm.io/gorm"

func init() {
	register(migration{25, "which replicas reach which PBX node", func(tx *gorm.DB) error {
		// Written by replicas that do not hold a node's lease but can
		// reach the node (PostgreSQL only; see NoteNodeReach). The
		// times are the database's clock, so replicas' clocks need not
		// agree.
		return tx.Exec(`CREATE TABLE IF NOT EXISTS pbx_node_reach (
	node TEXT NOT NULL,
	replica TEXT NOT NULL,
	ready_at TIMESTAMP NOT NULL,
	PRIMARY KEY (node, replica))`).Error
	}})
}
