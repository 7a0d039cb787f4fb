package storage

// SetSyncForTest replaces how the syncer makes batches durable (nil: the
// real fsync of the WAL), so that tests can hold or fail the disk.
func SetSyncForTest(s *Store, sync func() error) {
	if sync == nil {
		sync = s.syncWAL
	}
	s.sync = sync
}
