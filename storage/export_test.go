package storage

// SetSyncForTest replaces how the syncer makes batches durable (nil: the
// real fsync of the WAL), so that tests can hold or fail the disk.
func SetSyncForTest(s *Store, sync func() error) {
	if sync == nil {
		sync = s.syncWAL
	}
	s.sync = sync
}

// ProgressLaneOf is the index of the lane legID's changes go to (-1 on
// SQLite, which has none).
func ProgressLaneOf(s *Store, legID string) int {
	if s.lanes == nil {
		return -1
	}
	q := s.lanes.lane(legID)
	for i, l := range s.lanes.queues {
		if l == q {
			return i
		}
	}
	return -1
}
