package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Restarts: adopting a previous daemon's files and semaphores, refusing what is not provably its, and --restart's take-over with no gap.

// TestIntegrationRestartAdopts: a daemon stopped while a client is
// registered keeps the shadow files, current and the public set (and
// removes the source files); the next daemon adopts them, so the client
// reads on in its file, never re-attaches and misses no record.
func TestIntegrationRestartAdopts(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	d := startDaemon(t, bin, top, "--records", "30")
	c := attached(t, top)
	first := storm(t, 100)
	follow(t, c, first)
	d.stop(t, unix.SIGTERM)
	if names := topNames(t, top); !slices.Equal(names, []string{shadowDir}) {
		t.Errorf("top directory after a stop with a client holds %v, want only %s", names, shadowDir)
	}
	files := shadowFiles(t, top)
	if _, err := os.Stat(filepath.Join(top, shadowDir, statusName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("status file after the stop: %v", err)
	}
	if n, err := publicClients(); n != 1 || err != nil {
		t.Errorf("public set after the stop: %d clients, %v; want 1", n, err)
	}

	cmd, stderr := startForeground(t, bin, top, "--pidfile", "", "--records", "30")
	for _, want := range []string{"adopted public semaphore set 1071980 left by a previous daemon: 1 clients registered",
		"adopted pacct_shadow.d left by a previous daemon"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
	for seq := range files {
		if _, err := os.Stat(filepath.Join(top, shadowDir, pafName(seq))); err != nil {
			t.Errorf("shadow file %d after the adoption: %v", seq, err)
		}
	}
	second := storm(t, 100)
	follow(t, c, second)
	follow(t, c, first) // still read once, in order
	if c.attaches != 1 {
		t.Errorf("client attached %d times, want once", c.attaches)
	}
	c.detach()
	cmd.Process.Signal(unix.SIGTERM)
	cmd.Wait()
	if names := topNames(t, top); len(names) != 0 {
		t.Errorf("top directory after a stop with no client holds %v", names)
	}
}

// publicSetOf plants, for TestIntegrationAdoptRefuses, a public set of n
// semaphores in place of the daemon's, as any local user could.
func publicSetOf(n int) func(*testing.T, string) {
	return func(t *testing.T, _ string) {
		id, _ := semget(publicKey, 2, 0)
		semctl(id, 0, unix.IPC_RMID, nil)
		if _, err := semget(publicKey, n, unix.IPC_CREAT|0o666); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIntegrationAdoptRefuses: a shadow directory or public set that is not
// provably a daemon's is not adopted: one line says why, the directory is
// moved aside and removed, the set made anew. Each case starts from the
// state a daemon stopped with a client left, then plants one change.
func TestIntegrationAdoptRefuses(t *testing.T) {
	bin := integration(t)
	paf := func(top string, seq int64) string { return filepath.Join(top, shadowDir, pafName(seq)) }
	for _, tt := range []struct {
		name  string
		plant func(t *testing.T, top string)
		why   string
	}{
		{"current a symlink", func(t *testing.T, top string) {
			cur := filepath.Join(top, shadowDir, currentName)
			os.Remove(cur)
			os.Symlink("/etc/passwd", cur)
		}, "current is not a regular file"},
		{"a FIFO for the newest file", func(t *testing.T, top string) {
			os.Remove(paf(top, 3))
			unix.Mkfifo(paf(top, 3), 0o644)
		}, "0000000003.paf is not a regular file"},
		{"a hard link", func(t *testing.T, top string) {
			os.Link(paf(top, 1), filepath.Join(t.TempDir(), "link"))
		}, "0000000001.paf has 2 links"},
		{"a file not root's", func(t *testing.T, top string) {
			os.Chown(paf(top, 2), 1, 1)
		}, "0000000002.paf is owned by uid 1"},
		{"a short older file", func(t *testing.T, top string) {
			os.Truncate(paf(top, 1), 64)
		}, "file 1 holds 64 bytes, not 1920"},
		{"a foreign public set", publicSetOf(3), "not adopting public semaphore set 1071980 (3 semaphores, not 2)"},
		{"a one-semaphore public set", publicSetOf(1), "not adopting public semaphore set 1071980 (1 semaphores, not 2)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			top := newTop(t)
			d := startDaemon(t, bin, top, "--records", "30")
			c := attached(t, top)
			follow(t, c, storm(t, 100))
			d.stop(t, unix.SIGTERM) // the client registered: the state is kept
			c.detach()
			if len(shadowFiles(t, top)) != 4 {
				t.Fatalf("kept shadow files %v, want 0 to 3", shadowFiles(t, top))
			}
			tt.plant(t, top)
			cmd, stderr := startForeground(t, bin, top, "--pidfile", "", "--records", "30")
			if !strings.Contains(stderr.String(), tt.why) {
				t.Errorf("stderr %q lacks %q", stderr, tt.why)
			}
			adopted := strings.Contains(stderr.String(), "adopted "+shadowDir)
			cur, _ := os.ReadFile(filepath.Join(top, shadowDir, currentName))
			if !strings.Contains(tt.name, "public set") && (adopted || string(cur) != "0/30") {
				t.Errorf("after the start: adopted %v, current %q; want a fresh directory", adopted, cur)
			}
			if names := topNames(t, top); slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, staleDir) }) {
				t.Errorf("top directory holds %v: the moved-aside directory was not removed", names)
			}
			cmd.Process.Signal(unix.SIGTERM)
			cmd.Wait()
		})
	}
}

// TestIntegrationRestartNoGap: atopacctd --restart in the middle of a
// storm takes over from the running daemon with no gap: the client reads
// every record once, in order, attached once. With no daemon running it is
// an ordinary start; a SIGUSR2 that no daemon waits behind is ignored.
func TestIntegrationRestartNoGap(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	args := []string{"--restart", "--records", "1000"}
	d := startDaemon(t, bin, top, args...)
	d.signal(t, unix.SIGUSR2)
	time.Sleep(200 * time.Millisecond)
	if d.exited() {
		t.Fatal("a SIGUSR2 with no daemon waiting to take over stopped the daemon")
	}
	c := attached(t, top)
	wait := startStorm(t, 6000) // also on the emulated kernels of .ci/vm
	waitRecords(t, c, 1000)
	old := d
	start := time.Now()
	startDaemon(t, bin, top, args...) // a PID file of its own: the running daemon is found by its semaphore
	took := time.Since(start)
	if !old.exited() {
		t.Error("the replaced daemon still runs once the next one is ready")
	}
	r := wait(t)
	follow(t, c, r)
	if c.attaches != 1 {
		t.Errorf("client attached %d times, want once", c.attaches)
	}
	t.Logf("FIGURE --restart mid-storm: 0 of %d records lost or duplicated, client attached %d times; ready after %s",
		len(r.pids), c.attaches, took.Round(time.Millisecond))
}

// TestIntegrationRestartRefuses: --restart signals only a daemon it has
// identified, and once it has taken over, a failure switches accounting off.
func TestIntegrationRestartRefuses(t *testing.T) {
	bin := integration(t)
	strace := tool(t, "STRACE", "strace", "apt-get install strace")
	top := newTop(t)
	// The running daemon is another program (here: a copy of the daemon
	// elsewhere): never signalled, the start refused (exit 3).
	other := filepath.Join(t.TempDir(), "other")
	if b, err := os.ReadFile(bin); err != nil || os.WriteFile(other, b, 0o755) != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, other, top)
	cmd := exec.Command(bin, "--restart", "--pidfile", "", top)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitRunning || !strings.Contains(string(out), "runs \""+other+"\", not "+bin) {
		t.Errorf("--restart beside another program: exit %d, %q; want %d naming both", code, out, exitRunning)
	}
	if d.exited() {
		t.Fatal("--restart stopped a daemon it did not identify")
	}
	d.stop(t, unix.SIGTERM)

	// Taken over, then switching accounting on fails (strace makes acct(2)
	// fail): the start fails with exit 6 and accounting is off, not left
	// running into the old daemon's source file.
	d = startDaemon(t, bin, top)
	c := attached(t, top)
	src, err := os.Open(filepath.Join(top, sourceName))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cmd = exec.Command(strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=acct", "-e", "inject=acct:error=EPERM:when=1", bin, "--restart", "--pidfile", "", top)
	out, _ = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitAcct || !strings.Contains(string(out), "switch accounting on") {
		t.Errorf("--restart failing to switch accounting on: exit %d, %q; want %d", code, out, exitAcct)
	}
	if !d.exited() {
		t.Fatal("the daemon was not taken over")
	}
	before, _ := src.Seek(0, io.SeekEnd)
	storm(t, 10)
	if after, _ := src.Seek(0, io.SeekEnd); after != before {
		t.Errorf("the old source file grew by %d bytes after the failed take-over: accounting left on", after-before)
	}
	c.detach()
}
