package api_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/convoice/convoice/api/apitest"
)

// smallDisk is a folder on a disk the test can fill and free: a real 8 MiB
// tmpfs where the test may mount one (root, as CI runs), else an ordinary
// folder whose writes fail as a full disk's do (storage's WriteFault).
type smallDisk struct {
	dir        string
	writeFault func() error
	fill, free func()
}

func newSmallDisk(t *testing.T) smallDisk {
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err == nil {
			t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
			filler := filepath.Join(dir, "filler")
			t.Log("the disk is a real 8 MiB tmpfs")
			return smallDisk{dir: dir,
				fill: func() {
					f, err := os.Create(filler)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					block := make([]byte, 64<<10)
					for {
						if _, err := f.Write(block); err != nil {
							return // full
						}
					}
				},
				free: func() {
					if err := os.Remove(filler); err != nil {
						t.Fatal(err)
					}
				}}
		} else {
			t.Logf("no tmpfs (%v: %s): a write fault stands for the full disk", err, strings.TrimSpace(string(out)))
		}
	}
	var full atomic.Bool
	return smallDisk{dir: dir,
		writeFault: func() error {
			if full.Load() {
				return sqlite3.Error{Code: sqlite3.ErrFull}
			}
			return nil
		},
		fill: func() { full.Store(true) },
		free: func() { full.Store(false) }}
}

// Given the database's disk fills up, then a write answers 507
// storage_full (not 500 internal) and loses nothing already stored,
// /readyz turns not ready saying the storage is full, reads still work,
// and once there is room again everything recovers by itself.
func TestStorage_GivenAFullDisk_ThenWritesSay507ReadinessSaysFullAndItRecovers(t *testing.T) {
	disk := newSmallDisk(t)
	logs := &apitest.LogBuffer{}
	env := apitest.Start(t, apitest.Options{NoPBX: true, DB: filepath.Join(disk.dir, "convoice.db"), Logs: logs, WriteFault: disk.writeFault})
	ann, bo := env.AddUser("Ann"), env.AddUser("Bo")
	conv := newConversation(t, env, ann, bo)
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", ann.Token, map[string]any{"text": "before"})

	disk.fill()
	// The WAL may hold a little room of its own: write until it is gone.
	var last apitest.Response
	for i := 0; i < 200; i++ {
		last = env.Do("POST", "/api/v1/conversations/"+conv+"/messages", ann.Token, map[string]any{"text": strings.Repeat("full? ", 200)})
		if last.Status != 201 {
			break
		}
	}
	if last.Status != 507 || last.ErrorCode() != "storage_full" {
		t.Fatalf("a write on a full disk: %d %s; want 507 storage_full", last.Status, last.Body)
	}
	r := env.Do("GET", "/readyz", "", nil)
	if r.Status != 503 || !strings.Contains(string(r.Body), "storage full") {
		t.Fatalf("readyz on a full disk: %d %s", r.Status, r.Body)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "storage full") {
		t.Errorf("the full disk is not logged at ERROR:\n%s", tail(logs.String(), 20))
	}
	page := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/messages", bo.Token, nil).Map(t)
	if msgs, _ := page["messages"].([]any); len(msgs) == 0 {
		t.Fatalf("reads on a full disk: %v", page)
	}

	disk.free()
	env.WaitFor("ready again once there is room", 15*time.Second, func() bool {
		return env.Do("GET", "/readyz", "", nil).Status == 200
	})
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", ann.Token, map[string]any{"text": "after"})
	var err error
	if errors.Is(err, nil) && !strings.Contains(logs.String(), "room again") {
		t.Errorf("the recovery is not logged")
	}
}
