//go:build faults

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Faults a local user or an admin's mistake causes: a kept lock, files removed or planted, 101 clients, a dead syslog, bad top directories.

// 3b. Any local user (uid 65534 here) takes the public lock and keeps it
// (no SEM_UNDO: it stays taken after the process exits). Collection goes on
// once the lock has been held longer than a client attach can take, with
// one log line: the shadow files stay bounded while the client reads.
func TestFaultLockKept(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	const gc = time.Second
	_, log := startForeground(t, bin, top, "--pidfile", "", "--records", "30", "--gc-interval", gc.String())
	c := attached(t, top)
	forgeAsNobody(t, semLock, -1)
	start := time.Now()
	var most int
	for time.Since(start) < 14*time.Second {
		follow(t, c, storm(t, 300)) // ten files' worth a second
		most = max(most, len(shadowFiles(t, top)))
		time.Sleep(700 * time.Millisecond)
	}
	// The client reads on, as atop does (other processes' records keep
	// coming on a busy machine): within two collections (one may have
	// begun before it moved on) only its own file and the newest are left.
	var files int
	for deadline := time.Now().Add(2*gc + tick); ; time.Sleep(50 * time.Millisecond) {
		c.poll()
		if files = len(shadowFiles(t, top)); files <= 3 || time.Now().After(deadline) {
			break
		}
	}
	if files > 3 || !strings.Contains(log.String(), "collecting without it") {
		t.Errorf("%d shadow files %s after the client read the last one, with the lock kept (at most %d on the way); log:\n%s", files, 2*gc+tick, most, log)
	}
	figure(t, "public lock kept by uid 65534: at most %d shadow files on the way, %d after 14 s; client attached %d times", most, files, c.attaches)
}

// 7. Files removed under the daemon: it logs, recreates what is needed and
// keeps copying; the client re-attaches.
func TestFaultFilesRemoved(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	cmd, log := startForeground(t, bin, top, "--pidfile", "", "--records", "100", "--source-max", "4096")
	c := attached(t, top)
	follow(t, c, storm(t, 250))
	dir := filepath.Join(top, shadowDir)
	newest := func() int64 {
		cur, _ := os.ReadFile(filepath.Join(dir, currentName))
		seq, _, ok := parseCurrent(cur)
		if !ok {
			return -1
		}
		return seq
	}
	var figures []string
	for _, tt := range []struct {
		name, logged string
		remove       func() (seq int64)
	}{
		// The daemon names a new file in current at every rotation: on a
		// busy machine (its exits copied for the client too) one may come
		// before the once-a-tick repair sees current missing, and repair
		// it without a word.
		{"current", "current was removed", func() int64 {
			seq := newest()
			os.Remove(filepath.Join(dir, currentName))
			return seq
		}},
		// The file the client reads: with other processes' exits the
		// daemon may have moved on from the file the client is at, and a
		// client whose next file is gone waits for it for ever (atop 2.9
		// spins), whatever the daemon does: catch the client up first.
		{"newest shadow file", ".paf was removed: recreated", func() int64 {
			seq := newest()
			for try := 0; c.seq != seq && try < 100; try++ {
				if err := c.poll(); err != nil {
					t.Fatal(err)
				}
				seq = newest()
			}
			os.Remove(filepath.Join(dir, pafName(seq)))
			return -1 // the daemon moves on to a new file: it logs
		}},
		{"source files", "a source file was removed", func() int64 {
			os.Remove(filepath.Join(top, sourceName))
			os.Remove(filepath.Join(top, sourceNext))
			return -1
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := strings.Count(log.String(), tt.logged)
			seq := tt.remove()
			removed := time.Now()
			repaired := func() bool {
				rotated := seq >= 0 && newest() > seq // current written anew by a rotation
				return rotated || strings.Count(log.String(), tt.logged) > before
			}
			// A source file's name is only missed at the next rotation.
			exitsUntil(t, 5*time.Second, "the daemon to log "+tt.logged, repaired)
			back := time.Since(removed)
			if err := c.poll(); err != nil { // re-attaches, as atop at its next sample
				t.Fatal(err)
			}
			s := storm(t, 300) // several shadow files and source rotations
			c.pids, c.ppids = nil, nil
			follow(t, c, s)
			if cmd.ProcessState != nil {
				t.Fatalf("the daemon stopped: %s", log)
			}
			how := "logged and repaired"
			if strings.Count(log.String(), tt.logged) == before {
				how = "written anew by a rotation"
			}
			figures = append(figures, fmt.Sprintf("%s: %s within %s, 0 of %d lost after", tt.name, how, back.Round(100*time.Millisecond), len(s.pids)))
		})
	}
	// The shadow directory: Landlock lets the daemon make no new one. It
	// stops (exit 5, one line) and switches accounting off.
	var sources []*os.File // by the daemon's descriptors: their names were removed above
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	for _, e := range fds {
		name := fmt.Sprintf("/proc/%d/fd/%s", cmd.Process.Pid, e.Name())
		if link, _ := os.Readlink(name); strings.Contains(link, sourceName) {
			if f, err := os.Open(name); err == nil {
				defer f.Close()
				sources = append(sources, f)
			}
		}
	}
	total := func() (n int64) {
		for _, f := range sources {
			end, _ := f.Seek(0, io.SeekEnd)
			n += end
		}
		return n
	}
	if len(sources) != 2 {
		t.Fatalf("%d source files open in the daemon, want 2", len(sources))
	}
	// The daemon repairs what goes while RemoveAll empties the directory
	// (and copies the machine's other exits into new files): the final
	// rmdir then fails with ENOTEMPTY. Again until the directory is gone.
	tries := 1
	for ; os.RemoveAll(dir) != nil; tries++ {
		if tries == 1000 {
			t.Fatalf("%s: still not removed after %d tries", dir, tries)
		}
	}
	gone := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(stall): // it looks once a tick
		t.Fatalf("the daemon goes on %s after its shadow directory went (%d tries to remove it):\n%s", stall, tries, log)
	}
	stopped := time.Since(gone)
	if code := cmd.ProcessState.ExitCode(); code != exitFiles || !strings.Contains(log.String(), "pacct_shadow.d was removed; the sandbox lets no new one be made") {
		t.Errorf("exit %d, want 5 and a line saying why:\n%s", code, log)
	}
	before := total()
	storm(t, 20)
	if after := total(); after != before {
		t.Errorf("accounting still on after the stop: the source grew from %d to %d bytes", before, after)
	}
	figures = append(figures, fmt.Sprintf("pacct_shadow.d (removed in %d tries): exit 5 with one line %s after, accounting off", tries, stopped.Round(100*time.Millisecond)))
	if t.Failed() {
		t.Logf("daemon log:\n%s", log)
	}
	figure(t, "%s; client attached %d times", strings.Join(figures, "; "), c.attaches)
}

// TestFaultPlanted: what root leaves by mistake where the daemon writes
// (a FIFO as the PID file, at current.tmp and at status; hard links at the
// PID file and at the next shadow file's name to a file elsewhere) never
// blocks the daemon and is never written through: the daemon replaces it.
// The client reads every record, SIGTERM is acted on, the linked-to file
// keeps its content.
func TestFaultPlanted(t *testing.T) {
	bin := integration(t)
	for _, pidfile := range []string{"a FIFO", "a hard link"} {
		t.Run("PID file "+pidfile, func(t *testing.T) {
			top := newTop(t)
			victim := filepath.Join(t.TempDir(), "victim")
			os.WriteFile(victim, []byte("keep\n"), 0o644)
			d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "pid")}
			if pidfile == "a FIFO" {
				unix.Mkfifo(d.pidfile, 0o644)
			} else {
				os.Link(victim, d.pidfile)
			}
			d.start(t, bin, exec.Command(bin, "--pidfile", d.pidfile, "--records", "30", top))
			dir := filepath.Join(top, shadowDir)
			unix.Mkfifo(filepath.Join(dir, currentTmp), 0o644)
			os.Remove(filepath.Join(dir, statusName))
			unix.Mkfifo(filepath.Join(dir, statusName), 0o644)
			cur, _ := os.ReadFile(filepath.Join(dir, currentName))
			seq, _, _ := parseCurrent(cur)
			os.Link(victim, filepath.Join(dir, pafName(seq+1)))
			c := attached(t, top)
			follow(t, c, storm(t, 100)) // more than three files
			waitFor(t, 5*time.Second, "a regular status file", func() bool {
				st, err := os.Lstat(filepath.Join(dir, statusName))
				return err == nil && st.Mode().IsRegular()
			})
			d.stop(t, unix.SIGTERM)
			if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
				t.Errorf("the hard-linked file was written: %q", b)
			}
		})
	}
}

// 8. 100 clients attached, then a 101st: refused by the semaphore, and the
// daemon and the 100 unaffected.
func TestFaultClientLimit(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "1000")
	var clients []*clientProc
	for i := 0; i < 100; i++ {
		p, line := startClient(t, top)
		if line != "attached" {
			t.Fatalf("client %d: %q", i+1, line)
		}
		clients = append(clients, p)
	}
	_, line := startClient(t, top)
	if !strings.Contains(line, "refused") || !strings.Contains(line, unix.EAGAIN.Error()) {
		t.Errorf("client 101: %q, want refused with EAGAIN", line)
	}
	if n, _ := publicClients(); n != 100 {
		t.Errorf("%d clients registered, want 100", n)
	}
	s := storm(t, 2000)
	lost := 0
	for _, p := range clients {
		lost += len(s.pids) - p.read(s)
	}
	if lost != 0 {
		t.Errorf("the 100 clients lost %d records in all", lost)
	}
	figure(t, "100 attached; the 101st refused (%s); %d records lost over 100 clients × %d", line, lost, len(s.pids))
}

// 9. syslog unavailable: none at all, or a reader that never reads. The loop
// never blocks; lines are dropped and counted.
func TestFaultSyslog(t *testing.T) {
	bin := integration(t)
	if _, err := os.Stat("/dev/log"); err == nil {
		t.Log("this host has /dev/log: only the never-reading syslog is tested")
	}
	// A private /dev with /dev/log bound to a socket nobody reads.
	work := t.TempDir()
	sock := filepath.Join(work, "log")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	top := newTop(t)
	d := &daemonProc{top: top, pidfile: filepath.Join(work, "pid")}
	script := fmt.Sprintf(`set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /dev
mknod -m 666 /dev/null c 1 3
ln -s %s /dev/log
exec %s --pidfile %s %s`, sock, bin, d.pidfile, top)
	d.start(t, bin, exec.Command("unshare", "-m", "sh", "-c", script))
	c := attached(t, top)
	const signals = 2000 // each logs a line
	start := time.Now()
	for i := 0; i < signals; i++ {
		d.signal(t, unix.SIGUSR1)
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // let the daemon read its signal pipe
		}
	}
	s := storm(t, 1000)
	follow(t, c, s)
	took := time.Since(start)
	var dropped int
	waitFor(t, 5*time.Second, "dropped lines in the status", func() bool {
		dropped = statusNumber(statusOf(t, bin, top), "log lines dropped")
		return dropped > 0
	})
	// syslog restarts: a new socket at the same name. The sandboxed daemon
	// makes no socket, it connects its own again.
	unix.Close(fd)
	os.Remove(sock)
	if fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	d.signal(t, unix.SIGUSR1) // the first line meets the old socket's end
	d.signal(t, unix.SIGUSR1)
	buf := make([]byte, 512)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || !strings.Contains(string(buf[:max(n, 0)]), "atopacctd") {
		t.Errorf("restarted syslog: %q, %v; want a line of the daemon's", buf[:max(n, 0)], err)
	}
	figure(t, "%d SIGUSR1 lines to a syslog that never reads: %d dropped and counted; 0 of %d records lost, all read %s after the first signal; a restarted syslog gets lines again",
		signals, dropped, len(s.pids), took.Round(time.Millisecond))
}

// 11. Bad top directories: each refused with exit 2 and a line naming it.
func TestFaultBadTop(t *testing.T) {
	bin := integration(t)
	base := newTop(t)
	mk := func(name string, mode os.FileMode, uid int) string { return mkdirAs(t, base, name, mode, uid) }
	good := mk("good", 0o755, 0)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o644)
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	long := "/" + strings.Repeat("d/", unix.PathMax/2+1)
	under := func(parent string) string { return mkdirAs(t, parent, "top", 0o755, 0) }
	ulink := filepath.Join(base, "ulink")
	os.Symlink(good, ulink)
	os.Lchown(ulink, 65534, 65534)
	mkdirAs(t, good, "top", 0o755, 0)
	refused := 0
	for _, tt := range []struct{ name, top, stderr string }{
		{"missing", filepath.Join(base, "missing"), "no such file"},
		{"a file", file, "not a directory"},
		{"a symlink", link, "symbolic link"},
		{"group-writable", mk("gw", 0o775, 0), "writable by group or others"},
		{"world-writable", mk("ww", 0o757, 0), "writable by group or others"},
		{"sticky and world-writable", mk("tmp", 0o1777, 0), "writable by group or others"},
		{"another user's", mk("nobodys", 0o755, 65534), "owned by uid 65534"},
		{"longer than PATH_MAX", long, "atop's path buffers take at most"},
		{"longer than atop's buffers", "/" + strings.Repeat("d", maxTop), "atop's path buffers take at most"},
		// Whoever can rename a directory above the top can swap the tree.
		{"under another user's", under(mk("nobodys-parent", 0o755, 65534)), "above the top directory"},
		{"under a group-writable", under(mk("gw-parent", 0o775, 0)), "above the top directory"},
		{"through another user's symlink", filepath.Join(ulink, "top"), "owned by uid 65534"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, "-f", "--pidfile", "", tt.top)
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			line := strings.TrimSpace(stderr.String())
			if !errors.As(err, &ee) || ee.ExitCode() != exitTop || !strings.Contains(line, tt.stderr) || strings.Contains(line, "\n") {
				t.Errorf("%v, stderr %q; want exit 2 and one line with %q", err, line, tt.stderr)
			}
			refused++
		})
	}
	// Swapped for a symlink between the check and the use: the daemon opens
	// the top directory once (O_NOFOLLOW) and does everything relative to
	// that descriptor, so a swap either makes it refuse the symlink or
	// leaves it in the real directory; the symlink's target is never written.
	victim := mk("victim", 0o755, 0)
	racy := mk("racy", 0o755, 0)
	swap := filepath.Join(base, "swap")
	os.Symlink(victim, swap)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				unix.Renameat2(unix.AT_FDCWD, racy, unix.AT_FDCWD, swap, unix.RENAME_EXCHANGE)
			}
		}
	}()
	starts, refusals := 0, 0
	for i := 0; i < 20; i++ {
		d := &daemonProc{top: racy, pidfile: filepath.Join(t.TempDir(), "pid")}
		out, err := exec.Command(bin, "--pidfile", d.pidfile, racy).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			starts++
			d.adopt(t, bin)
			d.stop(t, unix.SIGTERM)
		case errors.As(err, &ee) && ee.ExitCode() == exitTop:
			refusals++
		default:
			t.Errorf("start %d: %v: %s", i, err, out)
		}
	}
	close(stop)
	<-done
	if names, _ := os.ReadDir(victim); len(names) != 0 {
		t.Errorf("the symlink's target was written: %v", names)
	}
	// A relative top is made absolute by the starting process: the daemon
	// starts in "/".
	rel := &daemonProc{top: good, pidfile: filepath.Join(t.TempDir(), "pid")}
	cmd := exec.Command(bin, "--pidfile", rel.pidfile, "good")
	cmd.Dir = base
	rel.start(t, bin, cmd)
	if _, err := os.Stat(filepath.Join(good, shadowDir, "current")); err != nil {
		t.Errorf("relative top good in %s: %v", base, err)
	}
	rel.stop(t, unix.SIGTERM)
	figure(t, "%d bad top directories refused with exit 2 and one line; swapped for a symlink in a loop: %d starts in the real directory, %d refused, 0 files in the symlink's target",
		refused, starts, refusals)
}
