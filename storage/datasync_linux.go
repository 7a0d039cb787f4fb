package storage

import (
	"os"
	"syscall"
)

// datasync flushes a file's data (and the size, when it changed) but not
// its timestamps: fdatasync, as SQLite itself uses. A plain fsync also
// writes the modification time that every WAL append changes, one ext4
// journal commit per sync, which stalled the next commits' writes.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
