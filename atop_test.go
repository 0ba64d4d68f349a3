package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Debian's real atop clients (2.8.1, 2.11.1, 2.13.0) and GNU acct's dump-acct against the daemon.

// TestIntegrationAtop: real atop clients, Debian 12's 2.8.1 (ATOP), Debian
// 13's 2.11.1 (ATOP_2_11) and Debian sid's 2.13.0 (ATOP_NEW: make check
// unpacks the newer ones with the libraries they need), attached at once, each see every process that exits between
// their samples: 100, then the daemon is stopped and started again (with
// SIGTERM, or killed), then 100 more. atop 2.8 would keep reading a deleted
// file, atop >= 2.9 start the new file at offset 0: both only read on
// because the next daemon adopts the shadow files.
func TestIntegrationAtop(t *testing.T) {
	bin := integration(t)
	atops := realAtops(t)
	for _, restart := range []unix.Signal{0, unix.SIGTERM, unix.SIGKILL} {
		name := "no restart"
		if restart != 0 {
			name = unix.SignalName(restart) + " and start"
		}
		t.Run(name, func(t *testing.T) {
			top := newTop(t)
			d := startDaemon(t, bin, top)
			atopsSeeAll(t, top, atops, func() {
				if restart != 0 {
					d.stop(t, restart)
					startDaemon(t, bin, top)
				}
			})
		})
	}
}

// realAtops are the paths of atop 2.8.1 (Debian 12), 2.11.1 (Debian 13)
// and 2.13.0 (Debian unstable), by version: make check unpacks them.
func realAtops(t *testing.T) map[string]string {
	return map[string]string{
		"2.8.1":  tool(t, "ATOP", "atop", "make check unpacks Debian 12's atop 2.8.1"),
		"2.11.1": tool(t, "ATOP_2_11", "atop-2.11.1", "make check unpacks Debian 13's atop 2.11.1"),
		"2.13.0": tool(t, "ATOP_NEW", "atop-2.13.0", "make check unpacks Debian sid's atop 2.13.0"),
	}
}

// atopsSeeAll: each atop must show all 200 exits of atopsAcross.
func atopsSeeAll(t *testing.T, top string, atops map[string]string, restart func()) {
	for version, n := range atopsAcross(t, top, atops, restart) {
		if n != 200 {
			t.Errorf("atop %s -P PRG shows %d of the 200 exited /bin/true processes", version, n)
		}
	}
}

// atopsAcross runs each atop over 6 samples while 100 processes exit,
// restart is called, and 100 more exit; it returns how many of the 200
// each atop showed, by version.
func atopsAcross(t *testing.T, top string, atops map[string]string, restart func()) map[string]int {
	raws := map[string]string{}
	var cmds []*exec.Cmd
	for version, atop := range atops {
		raws[version] = filepath.Join(t.TempDir(), "raw")
		cmds = append(cmds, startAtop(t, top, atop, raws[version]))
	}
	if n, err := publicClients(); n != len(atops) {
		t.Fatalf("%d clients registered (%v), want %d atops", n, err, len(atops))
	}
	pids := map[int]bool{}
	exits := func(n int) {
		for i := 0; i < n; i++ {
			c := exec.Command("/bin/true")
			if err := c.Run(); err != nil {
				t.Fatal(err)
			}
			pids[c.Process.Pid] = true
		}
	}
	exits(100)
	restart()
	exits(100)
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("atop -w: %v: %s", err, cmd.Stdout)
		}
	}
	seen := map[string]int{}
	for version, atop := range atops {
		parsed, err := exec.Command(atop, "-r", raws[version], "-P", "PRG").Output()
		if err != nil {
			t.Fatalf("atop %s -r: %v", version, err)
		}
		// PRG host epoch date time interval pid (name) state ...
		shown := map[int]bool{}
		for _, line := range strings.Split(string(parsed), "\n") {
			f := strings.Fields(line)
			if len(f) > 8 && f[0] == "PRG" && f[7] == "(true)" && f[8] == "E" && pids[atoi(f[6])] {
				shown[atoi(f[6])] = true
			}
		}
		seen[version] = len(shown)
	}
	return seen
}

// startAtop starts atop -w raw 1 6 reading the shadow files under top and
// returns once it has written its first sample: it has registered, and
// released sem1 (another atop registering before that would be refused).
func startAtop(t *testing.T, top, atop, raw string) *exec.Cmd {
	work := t.TempDir()
	// atop reads pacctdir from /etc/atoprc only: give it one of its own in a
	// private mount namespace, over an overlay of /etc, leaving the host's alone.
	script := fmt.Sprintf(`set -e
mount --make-rprivate /
mount -t tmpfs tmpfs %[1]s
mkdir %[1]s/upper %[1]s/work
mount -t overlay overlay -o lowerdir=/etc,upperdir=%[1]s/upper,workdir=%[1]s/work /etc
echo "pacctdir %[2]s" > /etc/atoprc
exec %[3]s -w %[4]s 1 6
`, work, top, atop, raw)
	cmd := exec.Command("unshare", "-m", "sh", "-c", script)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// atop counts exits from its first sample on: start them after it.
	waitFor(t, 10*time.Second, "atop's first sample", func() bool { st, err := os.Stat(raw); return err == nil && st.Size() > 0 })
	return cmd
}

// TestIntegrationDumpAcct has GNU acct's dump-acct (Debian's acct package,
// DUMP_ACCT=/path/to/dump-acct; make check unpacks it) read every shadow file of
// a storm: the same records, in the same order, as the files hold.
func TestIntegrationDumpAcct(t *testing.T) {
	bin := integration(t)
	dump := tool(t, "DUMP_ACCT", "dump-acct", "Debian's acct package; make check unpacks it")
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "1000")
	c := attached(t, top)
	follow(t, c, storm(t, 3500))
	files, records := 0, 0
	for seq := range shadowFiles(t, top) {
		name := filepath.Join(top, shadowDir, pafName(seq))
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		// dump-acct reads a copy: other exits (the last dump-acct's)
		// still append to the newest file.
		snap := filepath.Join(t.TempDir(), pafName(seq))
		if err := os.WriteFile(snap, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(dump, snap).Output()
		if err != nil {
			t.Fatalf("dump-acct %s: %v", name, err)
		}
		// comm|version|utime|stime|etime|uid|gid|mem|io|pid|ppid|...
		var pids []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Split(line, "|"); len(f) > 10 {
				pids = append(pids, strings.TrimSpace(f[9]))
			}
		}
		var want []string
		for i := 0; i+sizeofAcctV3 <= len(data); i += sizeofAcctV3 {
			f, err := parseFormat(data[i:])
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, strconv.Itoa(int(f.pid(data[i:i+sizeofAcctV3]))))
		}
		if !slices.Equal(pids, want) {
			t.Errorf("%s: dump-acct shows %d records, the file holds %d (first pids %v, want %v)", name, len(pids), len(want), pids[:min(3, len(pids))], want[:min(3, len(want))])
		}
		files++
		records += len(want)
	}
	if files < 4 {
		t.Errorf("%d shadow files, want at least 4", files)
	}
	t.Logf("dump-acct read %d shadow files, %d records, each as the file holds it", files, records)
}
