package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Clients against the built daemon: collection, the client-less reset, and the public semaphore set in hostile hands.

func TestIntegrationGarbageCollection(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "10", "--gc-interval", "1s")
	c := attached(t, top)
	storm(t, 100)
	waitFor(t, 5*time.Second, "ten shadow files", func() bool { return len(shadowFiles(t, top)) >= 10 })
	// The client lets go of file 0 and another reader read-locks file 3.
	c.f.Close()
	c.f = nil
	f, err := os.Open(filepath.Join(top, shadowDir, "0000000003.paf"))
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "files 0 to 2 to be collected", func() bool {
		files := shadowFiles(t, top)
		return !has(files, 0, 1, 2) && has(files, 3)
	})
	time.Sleep(1500 * time.Millisecond) // at least one more collection
	files := shadowFiles(t, top)
	for seq := int64(3); seq < 10; seq++ {
		if _, ok := files[seq]; !ok {
			t.Errorf("file %d removed although file 3 before it is read-locked", seq)
		}
	}
	f.Close()
	waitFor(t, 5*time.Second, "every file but the newest to be collected", func() bool { return len(shadowFiles(t, top)) == 1 })
}

func TestIntegrationClientlessReset(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "10")
	c := attached(t, top)
	follow(t, c, storm(t, 50))
	if n := len(shadowFiles(t, top)); n < 5 {
		t.Fatalf("%d shadow files with a client attached, want >= 5", n)
	}
	c.detach()
	storm(t, 1) // the next wakeup finds no client
	dir := filepath.Join(top, shadowDir)
	waitFor(t, 5*time.Second, "the client-less reset", func() bool {
		files := shadowFiles(t, top)
		cur, _ := os.ReadFile(filepath.Join(dir, currentName))
		return len(files) == 1 && has(files, 0) && files[0] == 0 && string(cur) == "0/10"
	})
	var st string
	waitFor(t, 3*time.Second, "the status to show the reset", func() bool { // published at most once a second
		st = statusOf(t, bin, top)
		return strings.Contains(st, "clients: 0\n") && regexp.MustCompile(`records dropped \(no clients\): [1-9]`).MatchString(st)
	})
}

// TestIntegrationResetSparesLockedFiles: any local user (uid 65534 here) can raise the public
// client count back to 100 (the set is mode 0666); the daemon then sees no
// client, but it resets nothing while a shadow file is read-locked, so the
// attached client reads on.
func TestIntegrationResetSparesLockedFiles(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "30")
	c := attached(t, top)
	follow(t, c, storm(t, 50))
	forgeAsNobody(t, semClients, 1) // any local user's +1
	if n, _ := publicClients(); n != 0 {
		t.Fatalf("%d clients counted after the +1, want 0", n)
	}
	f, err := os.Open(c.f.Name()) // the file the client reads now
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	size := st.Size()
	after := storm(t, 50)
	follow(t, c, after)
	if st, err := f.Stat(); err != nil || st.Sys().(*syscall.Stat_t).Nlink != 1 || st.Size() < size {
		t.Errorf("the client's file after the storm: %v, %d links, %d bytes; want it kept at %d bytes or more",
			err, st.Sys().(*syscall.Stat_t).Nlink, st.Size(), size)
	}
	if c.attaches != 1 {
		t.Errorf("client attached %d times, want once", c.attaches)
	}
}

// semopEnv makes the re-executed test binary do one semop, "num:delta"
// on the public set or "num:delta:key" (no SEM_UNDO), as any local user
// can, and exit.
const semopEnv = "ATOPACCTD_TEST_SEMOP"

func semopMain(spec string) {
	num, delta, key := 0, 0, publicKey
	fmt.Sscanf(spec, "%d:%d:%d", &num, &delta, &key)
	id, err := semget(key, 0, 0)
	if err == nil {
		err = semop(id, []sembuf{{uint16(num), int16(delta), unix.IPC_NOWAIT}})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "semop:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// forgeAsNobody does one semop on the public set as uid 65534 (sem num,
// delta, no SEM_UNDO), as any local user can, and undoes it at cleanup.
func forgeAsNobody(t *testing.T, num uint16, delta int16) {
	t.Helper()
	asNobody(t, fmt.Sprintf("%s=%d:%d", semopEnv, num, delta))
	t.Cleanup(func() {
		if id, err := semget(publicKey, 0, 0); err == nil {
			semop(id, []sembuf{{num, -delta, unix.IPC_NOWAIT}})
		}
	})
}

// semgetEnv makes the re-executed test binary create a key first, as any
// local user can, and exit: "nsems:mode" (octal) for the public key, or
// "nsems:mode:key:value" with semaphore 0 raised to value (no SEM_UNDO).
const semgetEnv = "ATOPACCTD_TEST_SEMGET"

func semgetMain(spec string) {
	nsems, mode, key, value := 0, 0, publicKey, 0
	fmt.Sscanf(spec, "%d:%o:%d:%d", &nsems, &mode, &key, &value)
	id, err := semget(key, nsems, unix.IPC_CREAT|unix.IPC_EXCL|mode)
	if err == nil && value > 0 {
		err = semop(id, []sembuf{{0, int16(value), 0}})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "semget:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// attackEnv makes the re-executed test binary attack as any local user
// can, until its standard input closes: "lock-high" pushes the public lock
// back to 32767 whenever it is below; "hold" read-locks the file open on
// descriptor 3 and registers once (SEM_UNDO). It prints "ready" once the
// attack is in place.
const attackEnv = "ATOPACCTD_TEST_ATTACK"

func attackMain(how string) {
	id, err := semget(publicKey, 0, 0)
	if err == nil && how == "hold" {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 0}
		if err = unix.FcntlFlock(3, unix.F_SETLK, &lk); err == nil {
			err = semop(id, []sembuf{{semClients, -1, semUndo | unix.IPC_NOWAIT}})
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, how+":", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	for {
		select {
		case <-done:
			os.Exit(0)
		default:
		}
		if how != "lock-high" {
			<-done
			continue
		}
		for range 1000 {
			if v, err := semctl(id, semLock, getVal, nil); err == nil && v < 32767 {
				semop(id, []sembuf{{semLock, int16(32767 - v), unix.IPC_NOWAIT}})
			}
		}
	}
}

// removePublicSet removes the public set, as ipcrm does.
func removePublicSet(t *testing.T) {
	if id, err := semget(publicKey, 0, 0); err == nil {
		if _, err := semctl(id, 0, unix.IPC_RMID, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// publicSet describes the public set for messages: owner, size, values.
func publicSet() string {
	id, err := semget(publicKey, 0, 0)
	if err != nil {
		return err.Error()
	}
	set, err := readIPCSet(id)
	if err != nil {
		return err.Error()
	}
	var v [2]uint16
	if set.nsems == 2 {
		semctl(id, 0, getAll, unsafe.Pointer(&v[0]))
	}
	return fmt.Sprintf("uid %d, %d semaphores, values %v", set.uid, set.nsems, v)
}

// TestIntegrationPublicKeyTaken: a local user creates the public key first
// (uid 65534, one semaphore, mode 0600), before a start or after an ipcrm
// at run time. At start the daemon removes that set, says whose it was and
// starts. At run time it cannot remove it (the sandbox): it says so, copies
// on, and makes its own set once the key is free again. The set it made
// after start, which the sandbox lets it not remove at stop, it leaves
// locked, and the next start replaces it.
func TestIntegrationPublicKeyTaken(t *testing.T) {
	bin := integration(t)
	t.Cleanup(func() { removePublicSet(t) })
	top := newTop(t)
	removePublicSet(t)
	asNobody(t, semgetEnv+"=1:600")
	cmd, log := startForeground(t, bin, top, "--pidfile", "", "--records", "30")
	if !strings.Contains(log.String(), "of uid 65534") || publicSet() != "uid 0, 2 semaphores, values [100 1]" {
		t.Errorf("at start: public set %s; log:\n%s", publicSet(), log)
	}
	c := attached(t, top)
	follow(t, c, storm(t, 50))

	removePublicSet(t)
	asNobody(t, semgetEnv+"=1:600")
	follow(t, c, storm(t, 50))
	waitFor(t, 5*time.Second, "a line about the foreign set", func() bool { return strings.Contains(log.String(), "made by another process") })
	removePublicSet(t)
	waitFor(t, 5*time.Second, "a public set of the daemon's", func() bool { return publicSet() == "uid 0, 2 semaphores, values [100 1]" })
	if !strings.Contains(log.String(), "made anew") {
		t.Errorf("no line about the new set:\n%s", log)
	}
	c.detach()
	cmd.Process.Signal(unix.SIGTERM)
	cmd.Wait()
	if got := publicSet(); got != "uid 0, 2 semaphores, values [100 0]" {
		t.Errorf("after the stop: public set %s, want it locked", got)
	}
	_, log = startForeground(t, bin, top, "--pidfile", "", "--records", "30")
	if !strings.Contains(log.String(), "locked with no client registered") || publicSet() != "uid 0, 2 semaphores, values [100 1]" {
		t.Errorf("the next start: public set %s; log:\n%s", publicSet(), log)
	}
}

// TestIntegrationClientCountTampered: any local user can raise the client
// count above 100 (the public set is mode 0666; here uid 65534 adds 101,
// so that it reads -100 clients). The daemon logs it once and copies on:
// the attached client reads every record.
func TestIntegrationClientCountTampered(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	_, log := startForeground(t, bin, top, "--pidfile", "", "--records", "30")
	c := attached(t, top)
	follow(t, c, storm(t, 50))
	forgeAsNobody(t, semClients, 101)
	after := storm(t, 50)
	follow(t, c, after)
	if n := strings.Count(log.String(), "tampered with by a local user"); n != 1 {
		t.Errorf("%d lines about the tampering, want 1:\n%s", n, log)
	}
}

// TestLookedSince: a look for read locks holds for a second when it found
// one; when it found none, only while nobody has operated on the count.
func TestLookedSince(t *testing.T) {
	at := time.Unix(1000, 0)
	for _, tt := range []struct {
		name        string
		found       bool
		after       time.Duration
		op          int
		holds, want bool
	}{
		{"found, just now", true, 0, 7, true, true},
		{"found, count set since", true, 500 * time.Millisecond, 8, true, true},
		{"found, a second on", true, tick, 7, false, true},
		{"none, count untouched", false, 500 * time.Millisecond, 7, true, false},
		{"none, count set since", false, 500 * time.Millisecond, 8, false, false},
		{"none, a second on", false, tick, 7, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c clientWatch
			if holds, _ := c.lookedSince(at, 7); holds {
				t.Fatal("a look that never happened holds")
			}
			c.looked(at, tt.found, 7)
			holds, found := c.lookedSince(at.Add(tt.after), tt.op)
			if holds != tt.holds || found != tt.want {
				t.Errorf("lookedSince = %v, %v; want %v, %v", holds, found, tt.holds, tt.want)
			}
		})
	}
}
