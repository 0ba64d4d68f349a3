package main

import (
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSembufSize(t *testing.T) {
	if got := unsafe.Sizeof(sembuf{}); got != sizeofSembuf {
		t.Errorf("sizeof sembuf: got %d, want %d", got, sizeofSembuf)
	}
}

// TestSemaphoreOps runs the public-set operations on a private set, which
// needs no root and touches no daemon's keys.
func TestSemaphoreOps(t *testing.T) {
	id, err := semget(unix.IPC_PRIVATE, 2, 0o600)
	if err != nil {
		t.Skipf("semget: %v (no System V IPC here)", err)
	}
	defer semctl(id, 0, unix.IPC_RMID, nil)
	init := [2]uint16{maxClients, 1}
	if _, err := semctl(id, 0, setAll, unsafe.Pointer(&init[0])); err != nil {
		t.Fatal(err)
	}
	s := semaphores{public: id}
	if n, free, err := s.values(); n != 0 || !free || err != nil {
		t.Fatalf("fresh set: %d clients, lock free %v, %v; want 0, true", n, free, err)
	}
	// A client registers the way atop does: both -1, non-blocking, undone at exit.
	if err := semop(id, []sembuf{{semClients, -1, semUndo | unix.IPC_NOWAIT}, {semLock, -1, semUndo | unix.IPC_NOWAIT}}); err != nil {
		t.Fatal(err)
	}
	if n, free, _ := s.values(); n != 1 || free {
		t.Errorf("while attaching: %d clients, lock free %v; want 1, false", n, free)
	}
	if ok, err := s.tryLock(); ok || err != nil {
		t.Errorf("tryLock while a client holds the lock: %v, %v; want false", ok, err)
	}
	semop(id, []sembuf{{semLock, 1, semUndo}})
	if ok, err := s.tryLock(); !ok || err != nil {
		t.Fatalf("tryLock on a free lock: %v, %v", ok, err)
	}
	if _, free, _ := s.values(); free {
		t.Error("lock still free after tryLock")
	}
	if err := s.unlock(); err != nil {
		t.Fatal(err)
	}
	if n, free, _ := s.values(); n != 1 || !free {
		t.Errorf("after unlock: %d clients, lock free %v; want 1, true", n, free)
	}
}

func TestPublicVerdict(t *testing.T) {
	good := ipcSet{perms: 0o666, nsems: 2}
	vals := func(a, b uint16) func() ([2]uint16, error) {
		return func() ([2]uint16, error) { return [2]uint16{a, b}, nil }
	}
	for _, tt := range []struct {
		name string
		set  ipcSet
		vals func() ([2]uint16, error)
		why  string
	}{
		{"a daemon's, two clients", good, vals(98, 1), ""},
		{"a client attaching", good, vals(99, 0), ""},
		{"no client", good, vals(100, 1), ""},
		{"a user's", ipcSet{perms: 0o666, nsems: 2, uid: 1000, cuid: 1000}, vals(100, 1), "owned by uid 1000"},
		{"given to root by a user", ipcSet{perms: 0o666, nsems: 2, cuid: 1000}, vals(100, 1), "made by uid 1000"},
		{"private mode", ipcSet{perms: 0o600, nsems: 2}, vals(100, 1), "mode 0600"},
		{"three semaphores", ipcSet{perms: 0o666, nsems: 3}, nil, "3 semaphores"},
		{"count above 100", good, vals(101, 1), "out of range"},
		{"lock above 1", good, vals(100, 2), "out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			why := publicVerdict(tt.set, tt.vals)
			if !strings.Contains(why, tt.why) || (tt.why == "") != (why == "") {
				t.Errorf("publicVerdict = %q, want %q", why, tt.why)
			}
		})
	}
}

func TestPrivateVerdict(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  ipcSet
		why  string
	}{
		{"a daemon's", ipcSet{perms: 0o600, nsems: 1}, ""},
		{"a user's, first", ipcSet{perms: 0o666, nsems: 1, uid: 65534, cuid: 65534}, "owned by uid 65534"},
		{"given to root by a user", ipcSet{perms: 0o600, nsems: 1, cuid: 65534}, "made by uid 65534"},
		{"root's, open to all", ipcSet{perms: 0o666, nsems: 1}, "mode 0666"},
		{"two semaphores", ipcSet{perms: 0o600, nsems: 2}, "2 semaphores"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			why := privateVerdict(tt.set)
			if !strings.Contains(why, tt.why) || (tt.why == "") != (why == "") {
				t.Errorf("privateVerdict = %q, want %q", why, tt.why)
			}
		})
	}
}
