package main

// Integration tests: the built daemon against the real kernel, real files,
// real semaphores and real clients. They need root, run one at a time
// (make test passes -p 1; none calls t.Parallel), always stop the daemons
// they start and switch accounting off, also when they fail.

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(stormEnv); spec != "" {
		stormMain(spec)
	}
	if path := os.Getenv(acctEnv); path != "" {
		acctMain(path)
	}
	if top := os.Getenv(clientEnv); top != "" {
		clientMain(top)
	}
	if spec := os.Getenv(semopEnv); spec != "" {
		semopMain(spec)
	}
	if spec := os.Getenv(semgetEnv); spec != "" {
		semgetMain(spec)
	}
	if spec := os.Getenv(probeSandboxEnv); spec != "" {
		probeSandbox(spec)
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func testCommand(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd
}

var built struct {
	sync.Mutex
	dir   string
	paths map[string]string // by -ldflags
}

// prebuilt names the daemons built ahead of time by -ldflags, for a machine
// without Go ($ATOPACCTD_TEST_PREBUILT, a directory: make vm).
var prebuilt = map[string]string{"": "atopacctd", "-X main.seccompDefault=log": "atopacctd.log"}

// daemonBinary builds the daemon once per test run and set of -ldflags, as
// the Makefile does; for ATOPACCTD_TEST_GOARCH when set (make test386).
func daemonBinary(t *testing.T, ldflags ...string) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	key := strings.Join(ldflags, " ")
	if p, ok := built.paths[key]; ok {
		return p
	}
	if dir := os.Getenv("ATOPACCTD_TEST_PREBUILT"); dir != "" {
		return filepath.Join(dir, prebuilt[key])
	}
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "atopacctd-bin")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755) // other users run it too (exit code tests)
		built.dir, built.paths = dir, map[string]string{}
	}
	p := filepath.Join(built.dir, fmt.Sprintf("atopacctd%d", len(built.paths)))
	cmd := testCommand("go", "build", "-trimpath", "-ldflags", key, "-o", p, ".")
	if arch := os.Getenv("ATOPACCTD_TEST_GOARCH"); arch != "" {
		cmd.Env = append(cmd.Env, "GOARCH="+arch) // e.g. 386: runs natively on amd64
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	built.paths[key] = p
	return p
}

// integration skips unless the test can own process accounting and the
// semaphore keys, and switches accounting off when the test ends. With
// ATOPACCTD_REQUIRE_INTEGRATION set (CI), a skip is a failure.
func integration(t *testing.T) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("ATOPACCTD_REQUIRE_INTEGRATION") != "" {
		skip = t.Fatalf
	}
	if testing.Short() {
		skip("integration test (-short)")
	}
	if os.Geteuid() != 0 {
		skip("needs root: acct(2) needs CAP_SYS_PACCT (EPERM otherwise)")
	}
	if running, err := daemonRunning(); err != nil || running {
		skip("another atopacctd is running (semaphore %d; %v): accounting is global", privateKey, err)
	}
	bin := daemonBinary(t)
	t.Cleanup(func() { acct(nil) })
	return bin
}

// newTop makes a top directory as the daemon wants it: root's, mode 0755.
func newTop(t *testing.T) string {
	top := t.TempDir()
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	return top
}

// daemonProc is a daemon a test started, identified by a pidfd: signals go
// through it alone, so a PID recycled by a storm never receives them.
type daemonProc struct {
	pid     int
	pidfd   int // 0 until adopt
	top     string
	pidfile string
}

// startDaemon starts the daemon the ordinary way (it daemonizes; the
// starting process returns once it is ready) and stops it at cleanup.
func startDaemon(t *testing.T, bin, top string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "atopacctd.pid")}
	return d.start(t, bin, exec.Command(bin, append(append([]string{"--pidfile", d.pidfile}, args...), top)...))
}

// start runs cmd, which returns once the daemon bin is ready, and adopts
// the daemon; it is killed at cleanup.
func (d *daemonProc) start(t *testing.T, bin string, cmd *exec.Cmd) *daemonProc {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	d.adopt(t, bin)
	t.Cleanup(func() { d.stop(t, unix.SIGKILL) })
	return d
}

// adopt identifies the process the PID file names: a pidfd first, then a
// check that it runs bin. From then on the pidfd names that process, even
// once its number is reused.
func (d *daemonProc) adopt(t *testing.T, bin string) {
	t.Helper()
	b, err := os.ReadFile(d.pidfile)
	if err != nil {
		t.Fatalf("PID file after a ready start: %v", err)
	}
	if d.pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("PID file %q", b)
	}
	fd, err := unix.PidfdOpen(d.pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", d.pid, err)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.pid)); exe != bin {
		unix.Close(fd)
		t.Fatalf("the PID file names pid %d running %q, not %s", d.pid, exe, bin)
	}
	d.pidfd = fd
}

// signal sends sig to the adopted daemon through its pidfd.
func (d *daemonProc) signal(t *testing.T, sig unix.Signal) {
	t.Helper()
	if err := unix.PidfdSendSignal(d.pidfd, sig, nil, 0); err != nil && err != unix.ESRCH {
		t.Fatalf("pidfd_send_signal %s to pid %d: %v", sig, d.pid, err)
	}
}

// exited reports whether the adopted daemon has exited (its pidfd is
// readable then).
func (d *daemonProc) exited() bool {
	fds := []unix.PollFd{{Fd: int32(d.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// stop signals the daemon and waits until it is gone.
func (d *daemonProc) stop(t *testing.T, sig unix.Signal) {
	if d.pidfd <= 0 {
		return
	}
	d.signal(t, sig)
	// The kernel undoes the daemon's semaphore count only when its last
	// thread has exited, which may be after the pidfd says it exited.
	waitFor(t, 10*time.Second, "daemon to exit", func() bool {
		busy, _ := daemonRunning()
		return d.exited() && !busy
	})
	unix.Close(d.pidfd)
	d.pidfd = 0
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
	}
}

// stall is how long a client may read nothing new while it waits for
// records: waits end when records stop coming, not after a total time, so
// that they last as long as the machine needs to make them.
const stall = 10 * time.Second

// readUntil polls the client until done says so, failing when no new
// record has arrived for stall.
func readUntil(t *testing.T, c *client, what string, done func() bool) {
	t.Helper()
	last, n := time.Now(), len(c.pids)
	for {
		if err := c.poll(); err != nil {
			t.Fatalf("client: %v", err)
		}
		if done() {
			return
		}
		if len(c.pids) > n {
			last, n = time.Now(), len(c.pids)
		} else if time.Since(last) > stall {
			t.Fatalf("no new record for %s waiting for %s (%d read)", stall, what, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRecords polls the client until it has read n records in all.
func waitRecords(t *testing.T, c *client, n int) {
	t.Helper()
	readUntil(t, c, fmt.Sprintf("%d records", n), func() bool { return len(c.pids) >= n })
}

// follow polls the client until it has read every record of the storm.
func follow(t *testing.T, c *client, want stormRun) {
	t.Helper()
	var err error
	defer func() {
		t.Logf("client: %d attaches, %d records, at file %d offset %d", c.attaches, len(c.pids), c.seq, c.off)
	}()
	readUntil(t, c, "every record of the storm", func() bool {
		err = c.check(want)
		return !errors.Is(err, errNotFound)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func shadowFiles(t *testing.T, top string) map[int64]int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(top, shadowDir))
	if err != nil {
		t.Fatal(err)
	}
	files := map[int64]int64{}
	for _, e := range ents {
		if seq, ok := parseName(e.Name()); ok {
			if info, err := e.Info(); err == nil {
				files[seq] = info.Size()
			}
		}
	}
	return files
}

// statusNumber reads "key: N" from a status text; -1 when it has none.
func statusNumber(st, key string) int {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:[ \t]+(\d+)`).FindStringSubmatch(st)
	if m == nil {
		return -1
	}
	return atoi(m[1])
}

func statusOf(t *testing.T, bin, top string) string {
	t.Helper()
	out, err := exec.Command(bin, "-s", top).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s -s: %v: %s", bin, err, out)
	}
	return string(out)
}

func TestIntegrationStorm(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	startDaemon(t, bin, top, "--records", "1000", "--source-max", "65536")
	c := attached(t, top)
	n := 20000
	if s := os.Getenv("ATOPACCTD_STORM"); s != "" {
		n = atoi(s) // e.g. 200000 for the figure in the closing note
	}
	pids := storm(t, n)
	follow(t, c, pids)
	t.Logf("%d of %d storm records read once, in order, over %d shadow files", len(pids.pids), n, c.files)
	if c.files < 20 {
		t.Errorf("records spread over %d shadow files, want >= 20", c.files)
	}
	for i, size := range c.fullSize {
		if size != 64000 {
			t.Errorf("full shadow file #%d holds %d bytes, want 64000", i, size)
		}
	}
	files := shadowFiles(t, top)
	newest := slices.Max(slices.Collect(maps.Keys(files)))
	for seq, size := range files {
		if seq != newest && size != 64000 {
			t.Errorf("shadow file %d holds %d bytes, want 64000 (only the newest may hold fewer)", seq, size)
		}
	}
	st := statusOf(t, bin, top)
	if statusNumber(st, "source rotations") < 12 {
		t.Errorf("want >= 12 source rotations for 20,000 records at 64 KiB; status:\n%s", st)
	}
	if !strings.Contains(st, "clients: 1\n") || !strings.Contains(st, "accounting: on\n") {
		t.Errorf("status lacks clients: 1 or accounting: on:\n%s", st)
	}
	if info, err := os.Stat(filepath.Join(top, sourceName)); err != nil || info.Size() > 65536+64*readRecords {
		t.Errorf("source file %v, %v: not bounded by --source-max", info, err)
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

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

func has(m map[int64]int64, keys ...int64) bool {
	for _, k := range keys {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
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

// topNames lists the top directory, sorted.
func topNames(t *testing.T, top string) []string {
	names, err := readNames(mustOpen(t, top))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// mkdirAs makes base/name with exactly this mode and owner.
func mkdirAs(t *testing.T, base, name string, mode os.FileMode, uid int) string {
	p := filepath.Join(base, name)
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	os.Chown(p, uid, 0)
	return p
}

func mustOpen(t *testing.T, dir string) int {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestIntegrationExitCodes(t *testing.T) {
	bin := integration(t)
	base := newTop(t)
	good := mkdirAs(t, base, "good", 0o755, 0)
	ro := mkdirAs(t, base, "ro", 0o755, 0)
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "mode=0755"); err == nil {
		t.Cleanup(func() { unix.Unmount(ro, 0) })
	} else {
		t.Logf("mount read-only tmpfs: %v", err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	for _, tt := range []struct {
		name   string
		args   []string
		attr   *syscall.SysProcAttr
		wrap   []string
		code   int
		stderr string
	}{
		{"version", []string{"-v"}, nil, nil, 0, ""},
		{"unknown option", []string{"--bogus"}, nil, nil, 1, "--bogus: unknown option"},
		{"compatible form, unknown dash", []string{"-x"}, nil, nil, 1, "usage:"},
		{"two directories", []string{good, good}, nil, nil, 1, "only one top directory"},
		{"records 0", []string{"--records", "0", good}, nil, nil, 1, "--records"},
		{"bad duration", []string{"--poll", "fast", good}, nil, nil, 1, "--poll"},
		{"not root", []string{good}, nobody, nil, 1, "must run as root"},
		{"status, none running", []string{"-s", good}, nobody, nil, 1, ""},
		{"read-only file system", []string{"-f", "--pidfile", "", ro}, nil, nil, 5, "pacct_source"},
		{"accounting refused (user namespace)", []string{"-f", "--pidfile", "", good}, nil, []string{"unshare", "-U", "-r"}, 6, "acct: operation not permitted"},
		{"accounting refused, daemonizing", []string{"--pidfile", "", good}, nil, []string{"unshare", "-U", "-r"}, 6, "acct: operation not permitted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			argv := append(append(tt.wrap, bin), tt.args...)
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.SysProcAttr = tt.attr
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.stderr)
			}
			if tt.code != 0 && strings.Count(strings.TrimSpace(stderr.String()), "\n") > 1 {
				t.Errorf("stderr has more than an error line and the usage: %q", stderr.String())
			}
			if names, _ := readNames(mustOpen(t, good)); len(names) != 0 {
				t.Errorf("a failed start left %v in %s", names, good)
			}
		})
	}
	t.Run("already running", func(t *testing.T) {
		startDaemon(t, bin, good)
		out, err := exec.Command(bin, "--pidfile", "", newTop(t)).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "running") {
			t.Errorf("second daemon: %v, %q; want exit 3", err, out)
		}
	})
}

// startNotify starts the daemon with -f, $NOTIFY_SOCKET=sock and args,
// its stderr kept; it is killed at cleanup.
func startNotify(t *testing.T, bin, sock string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-f"}, args...)...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	// Stopped (accounting off) also when the test binary dies without its
	// cleanups: go test's -timeout panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stderr
}

// startForeground runs the daemon with -f and waits for READY=1 on a
// notify socket, as systemd's Type=notify does.
func startForeground(t *testing.T, bin, top string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd, stderr := startNotify(t, bin, sock, append(args, top)...)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notify socket: %q, %v; stderr: %s", buf[:n], err, stderr)
	}
	return cmd, stderr
}

// syncBuffer is the daemon's stderr, read while the daemon writes it, with
// when each piece arrived.
type syncBuffer struct {
	sync.Mutex
	b    strings.Builder
	ends []int   // the length of b after each write
	when []int64 // monotonic() at that write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.Lock()
	defer s.Unlock()
	n, err := s.b.Write(p)
	s.ends, s.when = append(s.ends, s.b.Len()), append(s.when, monotonic())
	return n, err
}

func (s *syncBuffer) String() string {
	s.Lock()
	defer s.Unlock()
	return s.b.String()
}

func TestIntegrationShutdown(t *testing.T) {
	bin := integration(t)
	for _, tt := range []struct {
		sig  unix.Signal
		code int
	}{{unix.SIGTERM, 0}, {unix.SIGINT, 130}, {unix.SIGQUIT, 131},
		// Default actions that end a process: through the clean-up too.
		{unix.SIGABRT, 134}, {unix.SIGTRAP, 133}, {unix.SIGSYS, 159}, {unix.SIGILL, 132},
		{unix.SIGBUS, 135}, {unix.SIGFPE, 136}, {unix.SIGSEGV, 139}, {unix.SIGXCPU, 152}, {unix.SIGXFSZ, 153}} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			top := newTop(t)
			pidfile := filepath.Join(t.TempDir(), "pid")
			cmd, stderr := startForeground(t, bin, top, "--pidfile", pidfile)
			if b, _ := os.ReadFile(pidfile); string(b) != strconv.Itoa(cmd.Process.Pid)+"\n" {
				t.Errorf("PID file holds %q, want %d", b, cmd.Process.Pid)
			}
			src, err := os.Open(filepath.Join(top, sourceName))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			cmd.Process.Signal(unix.SIGHUP) // ignored
			cmd.Process.Signal(unix.SIGPIPE)
			time.Sleep(100 * time.Millisecond)
			cmd.Process.Signal(tt.sig)
			err = cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != tt.code {
				t.Errorf("exit %d (%v), want %d; stderr: %s", code, err, tt.code, stderr)
			}
			if names, _ := readNames(mustOpen(t, top)); len(names) != 0 {
				t.Errorf("top directory holds %v after shutdown", names)
			}
			// Outside the top directory the sandbox lets the daemon empty
			// the PID file, not remove it.
			if b, err := os.ReadFile(pidfile); !errors.Is(err, os.ErrNotExist) && len(b) != 0 {
				t.Errorf("PID file after shutdown: %q, %v; want it removed or empty", b, err)
			}
			if _, err := semget(publicKey, 2, 0); !errors.Is(err, unix.ENOENT) {
				t.Errorf("public semaphore set after shutdown: %v, want ENOENT", err)
			}
			// Accounting is off: exits no longer grow the (now unlinked) source.
			before, _ := src.Seek(0, 2)
			storm(t, 20)
			time.Sleep(100 * time.Millisecond)
			if after, _ := src.Seek(0, 2); after != before {
				t.Errorf("source grew from %d to %d bytes after shutdown: accounting still on", before, after)
			}
		})
	}
}

// TestIntegrationNoNice: without CAP_SYS_NICE (a unit that withholds it) the
// daemon says once that it copies at the usual priority, and runs on.
func TestIntegrationNoNice(t *testing.T) {
	bin := integration(t)
	setpriv := tool(t, "SETPRIV", "setpriv", "apt-get install util-linux")
	wrap := filepath.Join(t.TempDir(), "atopacctd")
	script := "#!/bin/sh\nexec " + setpriv + " --bounding-set=-sys_nice " + bin + ` "$@"` + "\n"
	if err := os.WriteFile(wrap, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, stderr := startForeground(t, wrap, newTop(t), "--pidfile", "")
	want := "nice -20: setpriority: permission denied: copying at the usual priority"
	if got := stderr.String(); strings.Count(got, want) != 1 {
		t.Errorf("stderr %q, want one %q", got, want)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v; stderr: %s", err, stderr)
	}
}

// sysctl sets /proc/sys/name to value for the test and restores it after.
func sysctl(t *testing.T, name, value string) error {
	p := filepath.Join("/proc/sys", name)
	old, err := os.ReadFile(p)
	if err == nil {
		err = os.WriteFile(p, []byte(value), 0o644)
	}
	if err != nil {
		return err
	}
	t.Cleanup(func() { os.WriteFile(p, old, 0o644) })
	return nil
}

// tool finds a program a test needs: $env, then the PATH. Missing, it skips
// the test, or fails it in CI, saying where it comes from.
func tool(t *testing.T, env, name, from string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil && os.Getenv("ATOPACCTD_REQUIRE_INTEGRATION") != "" {
		t.Fatalf("no %s: set %s=/path/to/%s (%s)", name, env, name, from)
	}
	if err != nil {
		t.Skipf("no %s: set %s=/path/to/%s (%s)", name, env, name, from)
	}
	return p
}

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

// TestIntegrationInitScript runs init/atopacct.init under busybox: its ash,
// its start-stop-daemon and nothing else on the PATH.
func TestIntegrationInitScript(t *testing.T) {
	bin := integration(t)
	bb := tool(t, "BUSYBOX", "busybox", "apt-get install busybox")
	applets := t.TempDir()
	if out, err := exec.Command(bb, "--install", "-s", applets).CombinedOutput(); err != nil {
		t.Fatalf("busybox --install: %v: %s", err, out)
	}
	top := newTop(t)
	d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "atopacctd.pid")}
	t.Cleanup(func() { d.stop(t, unix.SIGKILL) })
	victim := exec.Command("sleep", "600") // stands for an unrelated process
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Process.Kill(); victim.Wait() })
	script, _ := filepath.Abs("init/atopacct.init")
	run := func(action string) (string, int) {
		cmd := exec.Command(filepath.Join(applets, "sh"), script, action)
		cmd.Env = []string{"PATH=" + applets, "DAEMON=" + bin, "PIDFILE=" + d.pidfile, "TOPDIR=" + top}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)), cmd.ProcessState.ExitCode()
	}
	for _, step := range []struct {
		action, out string
		code        int
	}{
		{"start", "", 0},
		{"status", "atopacctd is running", 0},
		{"start", "already running", 0},
		{"stop", "", 0},
		{"status", "not running", 3},
		{"stop", "", 0},
		// A PID file left by a crash, naming a process that is not the
		// daemon (a storm recycles PIDs): never signalled, never taken for
		// the daemon.
		{"stale", "", 0},
		{"status", "not running", 3},
		{"stop", "", 0},
		{"restart", "", 0}, // none running: a start
		{"status", "atopacctd is running", 0},
		{"stop", "", 0},
		{"bogus", "usage:", 2},
	} {
		if step.action == "stale" {
			if err := os.WriteFile(d.pidfile, []byte(strconv.Itoa(victim.Process.Pid)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		out, code := run(step.action)
		if code != step.code || !strings.Contains(out, step.out) {
			t.Fatalf("%s: exit %d, %q; want %d and %q", step.action, code, out, step.code, step.out)
		}
		if (step.action == "start" || step.action == "restart") && d.pidfd == 0 {
			d.adopt(t, bin)
		}
		if step.action == "stop" && d.pidfd != 0 {
			// The script waits until the process runs no program any more
			// (/proc/PID/exe gone); its last threads may take a moment more.
			waitFor(t, time.Second, "the daemon's threads to exit after stop", d.exited)
			unix.Close(d.pidfd)
			d.pidfd = 0
			if names := topNames(t, top); len(names) != 0 {
				t.Errorf("top directory after stop holds %v", names)
			}
		}
	}
	// restart with a client registered: the next daemon takes over from the
	// running one (--restart) with accounting on throughout, so the client
	// reads every record once, in order, attached once.
	if out, code := run("start"); code != 0 {
		t.Fatalf("start: exit %d, %q", code, out)
	}
	d.adopt(t, bin)
	c := attached(t, top)
	wait := startStorm(t, 20000)
	waitRecords(t, c, 2000)
	replace := func() {
		if out, code := run("restart"); code != 0 {
			t.Fatalf("restart: exit %d, %q", code, out)
		}
		if !d.exited() {
			t.Error("the daemon restart replaced still runs")
		}
		unix.Close(d.pidfd)
		d.adopt(t, bin)
	}
	replace()
	r := wait(t)
	follow(t, c, r)
	t.Logf("FIGURE init script restart mid-storm: 0 of %d records lost or duplicated; client attached %d times", len(r.pids), c.attaches)
	if c.attaches != 1 {
		t.Errorf("client attached %d times across restart, want once", c.attaches)
	}
	c.detach()
	// The real clients read on across restart: every exit before and after.
	// They start once the daemon is client-less again: an atop registering
	// while it holds the lock to reset runs without accounting.
	waitFor(t, 10*time.Second, "the client-less reset", func() bool {
		exec.Command("/bin/true").Run() // wakes the daemon
		files := shadowFiles(t, top)
		return len(files) == 1 && files[0] == 0
	})
	atopsSeeAll(t, top, realAtops(t), replace)
	if out, code := run("stop"); code != 0 {
		t.Fatalf("stop: exit %d, %q", code, out)
	}

	// Our own child: a zombie, not reaped, if a signal killed it.
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", victim.Process.Pid))
	if _, state, _ := strings.Cut(string(stat), ") "); !strings.HasPrefix(state, "S") {
		t.Errorf("the process a stale PID file named is no longer sleeping: %q", stat)
	}
}

// TestIntegrationNotifyFailure: a $NOTIFY_SOCKET the daemon cannot reach
// costs one line saying so (a Type=notify start would otherwise time out
// with no word why); the daemon runs on and stops cleanly.
func TestIntegrationNotifyFailure(t *testing.T) {
	bin := integration(t)
	sock := filepath.Join(t.TempDir(), "missing")
	cmd, stderr := startNotify(t, bin, sock, "--pidfile", "", newTop(t))
	waitFor(t, 10*time.Second, "the daemon to start", func() bool { return strings.Contains(stderr.String(), "started") })
	want := "notify socket " + sock + ": connect: no such file or directory: systemd will not hear that the daemon is ready"
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q lacks %q", stderr, want)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v; stderr %s", err, stderr)
	}
}

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
	id, err := semget(publicKey, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	asNobody(t, semopEnv+"=0:1") // any local user's +1
	t.Cleanup(func() { semop(id, []sembuf{{semClients, -1, unix.IPC_NOWAIT}}) })
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

// semopEnv makes the re-executed test binary do one semop on the public
// set, "num:delta" (no SEM_UNDO), as any local user can, and exit.
const semopEnv = "ATOPACCTD_TEST_SEMOP"

func semopMain(spec string) {
	var num, delta int
	fmt.Sscanf(spec, "%d:%d", &num, &delta)
	id, err := semget(publicKey, 0, 0)
	if err == nil {
		err = semop(id, []sembuf{{uint16(num), int16(delta), unix.IPC_NOWAIT}})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "semop:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// semgetEnv makes the re-executed test binary create the public key with
// "nsems:mode" (octal), as any local user can, and exit.
const semgetEnv = "ATOPACCTD_TEST_SEMGET"

func semgetMain(spec string) {
	var nsems, mode int
	fmt.Sscanf(spec, "%d:%o", &nsems, &mode)
	if _, err := semget(publicKey, nsems, unix.IPC_CREAT|unix.IPC_EXCL|mode); err != nil {
		fmt.Fprintln(os.Stderr, "semget:", err)
		os.Exit(1)
	}
	os.Exit(0)
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

// asNobody re-executes the test binary as uid and gid 65534 with env set,
// from a copy that user may run.
func asNobody(t *testing.T, env string) {
	t.Helper()
	cmd := nobody(t, env)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid 65534, %s: %v: %s", env, err, out)
	}
}

// nobody makes the command asNobody runs: the test binary, copied where uid
// 65534 can run it.
func nobody(t *testing.T, env string) *exec.Cmd {
	t.Helper()
	dir, err := os.MkdirTemp("", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "test"), b, 0o755)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := testCommand(filepath.Join(dir, "test"), "-test.run=^$")
	cmd.Env = append(cmd.Env, env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
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
	asNobody(t, semopEnv+"=0:101")
	t.Cleanup(func() {
		if id, err := semget(publicKey, 0, 0); err == nil {
			semop(id, []sembuf{{semClients, -101, unix.IPC_NOWAIT}})
		}
	})
	after := storm(t, 50)
	follow(t, c, after)
	if n := strings.Count(log.String(), "tampered with by a local user"); n != 1 {
		t.Errorf("%d lines about the tampering, want 1:\n%s", n, log)
	}
}

// TestIntegrationInternalModes: neither the caller's environment nor what
// it leaves at descriptor 3 selects an internal mode. With the variables
// earlier versions read (exit at once; be the daemon, readiness at fd 3) and
// a pipe at fd 3, or with the daemon's own argv[0] but no pipe there, the
// command still starts a daemon of its own: another process, in a session
// of its own.
func TestIntegrationInternalModes(t *testing.T) {
	bin := integration(t)
	for _, argv0 := range []string{"atopacctd", daemonName} {
		t.Run(argv0, func(t *testing.T) {
			top := newTop(t)
			d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "pid")}
			fd3, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer fd3.Close()
			defer w.Close()
			if argv0 == daemonName {
				fd3, _ = os.Open(bin) // a regular file, not the readiness pipe
				defer fd3.Close()
			}
			cmd := exec.Command(bin, "--pidfile", d.pidfile, top)
			cmd.Args[0] = argv0
			cmd.Env = append(os.Environ(), "ATOPACCTD_EXIT_PROBE=1", "ATOPACCTD_READY_FD=3")
			cmd.ExtraFiles = []*os.File{fd3}
			d.start(t, bin, cmd)
			if sid, _ := unix.Getsid(d.pid); d.pid == cmd.Process.Pid || sid != d.pid {
				t.Errorf("the daemon is pid %d in session %d; the command was pid %d: want another process leading its own session", d.pid, sid, cmd.Process.Pid)
			}
		})
	}
}

// TestIntegrationInheritedDescriptors: a descriptor the caller leaves open
// (here fds 3 to 9, one file) is not held by the daemon (-f: no re-exec).
func TestIntegrationInheritedDescriptors(t *testing.T) {
	bin := integration(t)
	top := newTop(t)
	held := filepath.Join(t.TempDir(), "held")
	f, err := os.Create(held)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "pid")}
	cmd := exec.Command(bin, "-f", "--pidfile", d.pidfile, top)
	cmd.ExtraFiles = slices.Repeat([]*os.File{f}, 7)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, 10*time.Second, "the PID file", func() bool { _, err := os.Stat(d.pidfile); return err == nil })
	d.adopt(t, bin)
	defer d.stop(t, unix.SIGTERM)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", d.pid, e.Name())); link == held {
			t.Errorf("the daemon holds the caller's fd %s (%s)", e.Name(), link)
		}
	}
}
