package main

// Test helpers shared by the integration tests: an atop-like client that
// follows the shadow files exactly as docs/PROTOCOL.md describes, and a storm of
// short-lived processes.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// client registers through the public semaphores and reads every record.
type client struct {
	dir      string // TOP/pacct_shadow.d
	sem      int
	f        *os.File
	seq, max int64
	off      int64
	format   recordFormat
	pids     []uint32 // ac_pid of every record read, in order
	ppids    []uint32 // ac_ppid of the same records
	files    int      // shadow files read
	fullSize []int64  // size of every file left behind as full
	attaches int
	attached bool // counted in the public set's sem 0
	buf      []byte
}

// attach registers like atop >= 2.8: one non-blocking semop of both -1,
// read current, open and read-lock that file, then release the lock.
func attach(top string) (*client, error) {
	c := &client{dir: filepath.Join(top, shadowDir)}
	return c, c.attach()
}

func (c *client) attach() error {
	id, err := semget(publicKey, 2, 0)
	if err != nil {
		return fmt.Errorf("semget public: %w", err)
	}
	if c.attached && c.sem == id {
		// Re-attaching: one client counts once.
		semop(id, []sembuf{{semClients, 1, semUndo}})
		c.attached = false
	}
	c.sem = id
	if err := semop(id, []sembuf{{semClients, -1, semUndo | unix.IPC_NOWAIT}, {semLock, -1, semUndo | unix.IPC_NOWAIT}}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	c.attached = true
	defer semop(id, []sembuf{{semLock, 1, semUndo}})
	b, err := os.ReadFile(filepath.Join(c.dir, currentName))
	if err != nil {
		return err
	}
	seq, max, ok := parseCurrent(b)
	if !ok {
		return fmt.Errorf("current %q", b)
	}
	c.max = max
	c.attaches++
	return c.open(seq)
}

// pafName is a shadow file's name as docs/PROTOCOL.md gives it (and atop builds
// it), spelled apart from the daemon's formatName on purpose.
func pafName(seq int64) string { return fmt.Sprintf("%010d.paf", seq) }

// open opens and read-locks file seq, then lets go of the previous file.
func (c *client) open(seq int64) error {
	f, err := os.Open(filepath.Join(c.dir, pafName(seq)))
	if err != nil {
		return err
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		f.Close()
		return fmt.Errorf("read lock: %w", err)
	}
	if c.f != nil {
		c.f.Close()
	}
	c.f, c.seq, c.off = f, seq, 0
	c.files++
	return nil
}

// poll reads what is new, moving to the next file when one is read to its
// full size, and re-attaching when its file was deleted.
func (c *client) poll() error {
	if c.buf == nil {
		c.buf = make([]byte, 64*1024)
	}
	buf := c.buf
	for {
		n, err := c.f.ReadAt(buf, c.off)
		if err != nil && err != io.EOF {
			return fmt.Errorf("read %s: %w", c.f.Name(), err)
		}
		n -= n % 64
		for i := 0; i < n; i += 64 {
			rec := buf[i : i+64]
			if c.format.size == 0 {
				if c.format, err = parseFormat(rec); err != nil {
					return err
				}
			}
			c.pids = append(c.pids, c.format.pid(rec))
			c.ppids = append(c.ppids, c.format.order.Uint32(rec[offV3Ppid:]))
		}
		c.off += int64(n)
		if n > 0 {
			continue
		}
		var st unix.Stat_t
		unix.Fstat(int(c.f.Fd()), &st)
		switch {
		case st.Nlink == 0:
			if err := c.attach(); err != nil {
				return err
			}
		case c.off == c.max*64:
			if _, err := os.Stat(filepath.Join(c.dir, pafName(c.seq+1))); err != nil {
				return nil // the daemon creates it in a moment
			}
			c.fullSize = append(c.fullSize, st.Size)
			if err := c.open(c.seq + 1); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// detach closes the file and gives the client count back; a second call
// does nothing.
func (c *client) detach() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
	if c.attached {
		semop(c.sem, []sembuf{{semClients, 1, semUndo}})
		c.attached = false
	}
}

// attached attaches a client for the test and detaches it when the test ends.
func attached(tb testing.TB, top string) *client {
	tb.Helper()
	c, err := attach(top)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.detach)
	return c
}

// stormEnv makes the re-executed test binary a storm generator (TestMain).
const stormEnv = "ATOPACCTD_TEST_STORM"

// children counts the records the client read of processes whose parent is
// parent (a storm's).
func (c *client) children(parent uint32) int {
	n := 0
	for _, p := range c.ppids {
		if p == parent {
			n++
		}
	}
	return n
}

// clone(2)'s first two arguments, flags and stack: s390x takes them the
// other way round (CONFIG_CLONE_BACKWARDS2).
var cloneFlags, cloneStack uintptr = uintptr(syscall.SIGCHLD), 0

func init() {
	if runtime.GOARCH == "s390x" {
		cloneFlags, cloneStack = cloneStack, cloneFlags
	}
}

// stormMain forks n children that _exit at once, one after the other (fewer
// when SIGUSR1 stops it), and writes its own pid, then theirs, then the
// CLOCK_MONOTONIC time (ns) just before each was forked, to the file named
// by stormEnv's value after the count.
func stormMain(spec string) {
	var n int
	var out string
	fmt.Sscanf(spec, "%d:%s", &n, &out)
	var stopped atomic.Bool
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, unix.SIGUSR1)
	go func() { <-usr1; stopped.Store(true) }()
	pids := binary.NativeEndian.AppendUint32(make([]byte, 0, 12*n+4), uint32(os.Getpid()))
	forked := make([]byte, 0, 8*n)
	for i := 0; i < n && !stopped.Load(); i++ {
		forked = binary.NativeEndian.AppendUint64(forked, uint64(monotonic()))
		pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, cloneFlags, cloneStack, 0, 0, 0, 0)
		if errno != 0 {
			fmt.Fprintln(os.Stderr, "clone:", errno)
			os.Exit(1)
		}
		if pid == 0 {
			syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
		}
		var ws syscall.WaitStatus
		syscall.Wait4(int(pid), &ws, 0, nil)
		pids = binary.NativeEndian.AppendUint32(pids, uint32(pid))
	}
	if err := os.WriteFile(out, append(pids, forked...), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// stormRun is a storm's children, in exit order, and their parent.
type stormRun struct {
	parent uint32
	pids   []uint32
	forked []int64 // when each child was about to be forked (monotonic): it exited after
}

// monotonic reads CLOCK_MONOTONIC in ns, comparable across processes.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// storm runs n short-lived processes.
func storm(t *testing.T, n int) stormRun {
	t.Helper()
	return startStorm(t, n)(t)
}

// startStorm starts n short-lived processes in the background; the function
// it returns waits for them (call it from the test's goroutine).
func startStorm(t *testing.T, n int) func(*testing.T) stormRun {
	t.Helper()
	wait, _ := stoppableStorm(t, n)
	return wait
}

// stoppableStorm is startStorm with a second function, which ends the storm
// early: wait then returns the processes made until then.
func stoppableStorm(t *testing.T, n int) (wait func(*testing.T) stormRun, stop func()) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "pids")
	cmd := testCommand(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), stormEnv+"="+strconv.Itoa(n)+":"+out)
	var msg strings.Builder
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { cmd.Process.Signal(unix.SIGUSR1) } // a child of ours, not reaped yet: its pid is still its own
	return func(t *testing.T) stormRun {
		t.Helper()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("storm: %v: %s", err, msg.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 4 || (len(b)-4)%12 != 0 || (len(b)-4)/12 > n {
			t.Fatalf("storm wrote %d bytes, not 4+12k with k <= %d", len(b), n)
		}
		n := (len(b) - 4) / 12
		pids := make([]uint32, n+1)
		for i := range pids {
			pids[i] = binary.NativeEndian.Uint32(b[4*i:])
		}
		forked := make([]int64, n)
		for i := range forked {
			forked[i] = int64(binary.NativeEndian.Uint64(b[4*(n+1)+8*i:]))
		}
		return stormRun{parent: pids[0], pids: pids[1:], forked: forked}
	}, stop
}

// clientEnv makes the re-executed test binary an atop-like client process
// (TestMain) of the top directory it names: it attaches and prints
// "attached" (or "refused: <error>" and exits 1), then answers each line
// "PARENT N" on stdin with "read K", K being the records of the children of
// PARENT it read (waiting up to 20 s for N); it detaches at EOF.
const clientEnv = "ATOPACCTD_TEST_CLIENT"

func clientMain(top string) {
	c, err := attach(top)
	if err != nil {
		fmt.Printf("refused: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("attached")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var parent uint32
		var n int
		fmt.Sscanf(sc.Text(), "%d %d", &parent, &n)
		got := 0
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if err := c.poll(); err != nil {
				fmt.Printf("error: %v\n", err)
				os.Exit(1)
			}
			if got = c.children(parent); got >= n || time.Now().After(deadline) {
				break
			}
		}
		fmt.Printf("read %d\n", got)
	}
	os.Exit(0)
}

var errNotFound = errors.New("not found")

// check verifies that the client read the storm's records (those whose parent
// is the storm process: pids wrap around in a long storm) exactly once each,
// in exit order.
func (c *client) check(s stormRun) error {
	next := 0
	for i, p := range c.pids {
		if c.ppids[i] != s.parent {
			continue
		}
		if next == len(s.pids) || p != s.pids[next] {
			return fmt.Errorf("record of pid %d read where #%d of the storm (pid %d) was due", p, next, s.pids[min(next, len(s.pids)-1)])
		}
		next++
	}
	if next < len(s.pids) {
		return fmt.Errorf("%d of %d storm records read: %w", next, len(s.pids), errNotFound)
	}
	return nil
}

// acctEnv makes the re-executed test binary call acct(2) on the file it
// names, as accton(8) does, and exit.
const acctEnv = "ATOPACCTD_TEST_ACCT"

func acctMain(path string) {
	if err := unix.Acct(path); err != nil {
		fmt.Fprintln(os.Stderr, "acct:", err)
		os.Exit(1)
	}
	os.Exit(0)
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
