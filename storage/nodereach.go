package storage

import (
	"context"
	"time"
)

// A replica that holds a PBX node's lease but cannot reach the node (its
// own route to the PBX is down) should hand the node over — but only when
// another replica can reach it, or a PBX that is down for everyone would
// be passed from replica to replica. The replicas that do not hold the
// lease say here, every few seconds, that they reach the node; the holder
// asks before it lets go. PostgreSQL only: on SQLite one process holds
// every node.

// NoteNodeReach records that replica reaches node now (by the database's
// clock).
func (s *Store) NoteNodeReach(ctx context.Context, node, replica string) error {
	if s.dialect != "postgres" {
		return nil
	}
	return s.db.WithContext(ctx).Exec(`INSERT INTO pbx_node_reach (node, replica, ready_at) VALUES (?, ?, now())
 ON CONFLICT (node, replica) DO UPDATE SET ready_at = excluded.ready_at`, node, replica).Error
}

// OthersReachNode reports whether a replica other than replica said within
// the last d that it reaches node.
func (s *Store) OthersReachNode(ctx context.Context, node, replica string, d time.Duration) (bool, error) {
	if s.dialect != "postgres" {
		return false, nil
	}
	var n int64
	err := s.db.WithContext(ctx).Raw(`SELECT count(*) FROM pbx_node_reach
 WHERE node = ? AND replica <> ? AND ready_at > now() - make_interval(secs => ?)`, node, replica, d.Seconds()).Scan(&n).Error
	return n > 0, err
}

// ForgetNodeReach deletes what replicas said longer ago than d (replicas
// that stopped: each process has an id of its own).
func (s *Store) ForgetNodeReach(ctx context.Context, d time.Duration) error {
	if s.dialect != "postgres" {
		return nil
	}
	return s.db.WithContext(ctx).Exec(`DELETE FROM pbx_node_reach WHERE ready_at < now() - make_interval(secs => ?)`, d.Seconds()).Error
}
