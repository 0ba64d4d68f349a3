package main

import (
	"errors"
	"fmt"
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

	"golang.org/x/sys/unix"
)

// The harness every integration, fault and bench test shares: the child
// modes the re-executed test binary runs, the built daemon binary, the one
// daemon handle, status and file readers, and waits that judge by progress.
// Integration tests need root, run one at a time (make test passes -p 1;
// none calls t.Parallel), always stop the daemons they start and switch
// accounting off, also when they fail.

// childModes are what the re-executed test binary does instead of testing,
// each chosen by its environment variable, whose value it takes. Those with
// mainThread run in init, where the main goroutine still runs on the
// process's main thread; the others in TestMain. Each exits.
var childModes = []struct {
	env        string
	run        func(string)
	mainThread bool
}{
	{stormEnv, stormMain, false},           // client_test.go: a storm of exits
	{acctEnv, acctMain, false},             // client_test.go: acct(2) on a file
	{clientEnv, clientMain, false},         // client_test.go: a client following the shadow files
	{semopEnv, semopMain, false},           // clients_test.go: one semop, as any user
	{semgetEnv, semgetMain, false},         // clients_test.go: a key taken first, as any user
	{attackEnv, attackMain, false},         // clients_test.go: a lasting attack, as any user
	{probeSandboxEnv, probeSandbox, false}, // sandbox_test.go: what the sandbox refuses
	{leadersEnv, leadersMain, true},        // processes whose leader exits before its threads
	{leaderEnv, leaderMain, true},          // one of them
}

func init() {
	for _, m := range childModes {
		if spec := os.Getenv(m.env); spec != "" && m.mainThread {
			m.run(spec)
		}
	}
}

func TestMain(m *testing.M) {
	for _, mode := range childModes {
		if spec := os.Getenv(mode.env); spec != "" {
			mode.run(spec)
		}
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// leadersEnv makes the re-executed test binary start n processes, one
// every interval ("n:interval:life"), whose main thread exits at once while
// another thread lives on for life, and then exit: each brings an exit
// event of its leader and, until its group ends, no record. A stream, so
// that an unrelated exit (a record) only puts the daemon's verdict off.
const (
	leadersEnv = "ATOPACCTD_TEST_LEADERS"
	leaderEnv  = "ATOPACCTD_TEST_LEADER"
)

func leadersMain(spec string) {
	f := strings.Split(spec, ":")
	n, _ := strconv.Atoi(f[0])
	every, _ := time.ParseDuration(f[1])
	for range n {
		p, err := os.StartProcess("/proc/self/exe", []string{"leader"}, &os.ProcAttr{Env: []string{leaderEnv + "=" + f[2]}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		p.Release()
		time.Sleep(every)
	}
	os.Exit(0)
}

// leaderMain ends the main thread alone: init runs on it, and exit(2)
// ends that thread only (Syscall, not RawSyscall, so that the runtime hands
// its P on); another thread exits the process after life.
func leaderMain(life string) {
	d, _ := time.ParseDuration(life)
	go func() { time.Sleep(d); os.Exit(0) }()
	syscall.Syscall(syscall.SYS_EXIT, 0, 0, 0)
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

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
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

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func has(m map[int64]int64, keys ...int64) bool {
	for _, k := range keys {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
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
