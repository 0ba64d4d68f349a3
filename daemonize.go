// Daemonizing and readiness: the starting process re-executes the binary in
// a new session and exits only once the daemon reports ready (or its exit
// code and error) through a pipe; the PID file for Type=forking units; READY=1
// over $NOTIFY_SOCKET for Type=notify units.
// Speaks setsid(2), pipe(2), unix(7) datagrams and sd_notify(3).

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// The re-executed daemon runs as argv[0] daemonName with its readiness
	// pipe at readyFD: internal modes are chosen by the arguments the
	// starting process sets up, never by the caller's environment.
	daemonName = "atopacctd-daemon"
	readyFD    = 3
	readyLine  = "ready"
	readyWait  = 30 * time.Second
)

// formatReady encodes the daemon's report to the starting process, one
// line: "ready", or "<exit code> <error>" when the start failed.
func formatReady(code int, err error) []byte {
	if code == exitOK {
		return []byte(readyLine + "\n")
	}
	msg := "failed"
	if err != nil {
		msg = strings.ReplaceAll(err.Error(), "\n", " ")
	}
	return []byte(strconv.Itoa(code) + " " + msg + "\n")
}

// parseReady decodes a report line (without its newline): ready, or the exit
// code and error of a failed start; ok is false for anything else.
func parseReady(line string) (ready bool, code int, msg string, ok bool) {
	if line == readyLine {
		return true, exitOK, "", true
	}
	codeStr, msg, found := strings.Cut(line, " ")
	code, err := strconv.Atoi(codeStr)
	if !found || err != nil || code <= 0 || code > 255 {
		return false, 0, "", false
	}
	return false, code, msg, true
}

// readyPipe returns the readiness pipe of a re-executed daemon, else nil:
// argv[0] daemonName and readyFD the write end of a pipe.
func readyPipe() *os.File {
	var st unix.Stat_t
	if os.Args[0] != daemonName || unix.Fstat(readyFD, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil
	}
	if fl, err := unix.FcntlInt(readyFD, unix.F_GETFL, 0); err != nil || fl&unix.O_ACCMODE != unix.O_WRONLY {
		return nil
	}
	unix.CloseOnExec(readyFD)
	return os.NewFile(readyFD, "readiness pipe")
}

// daemonize starts the daemon in a new session and waits until it reports
// ready (exit 0) or fails (its exit code and error line); it never hangs.
func daemonize(args []string, log *logger) int {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	r, w, err := os.Pipe()
	if err != nil {
		log.errorf("readiness pipe: %v", err)
		return exitFiles
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		log.errorf("%v", err)
		return exitFiles
	}
	p, err := os.StartProcess(exe, append([]string{daemonName}, args...), &os.ProcAttr{
		Dir: "/", Files: []*os.File{null, null, null, w}, // w: readyFD
		Sys: &syscall.SysProcAttr{Setsid: true}})
	null.Close()
	w.Close()
	if err != nil {
		log.errorf("start daemon %s: %v", exe, err)
		return exitFiles
	}
	r.SetReadDeadline(time.Now().Add(readyWait))
	line, err := bufio.NewReader(r).ReadString('\n')
	ready, code, msg, ok := parseReady(strings.TrimSuffix(line, "\n"))
	switch {
	case ready:
		return exitOK
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.Kill() // our own child, through its pidfd
		p.Wait()
		log.errorf("daemon (pid %d) not ready after %s: killed", p.Pid, readyWait)
		return exitFiles
	}
	st, _ := p.Wait()
	if ok {
		log.errorf("%s", msg)
		return code
	}
	log.errorf("daemon exited before it was ready (%s)", st)
	if code = st.ExitCode(); code <= 0 {
		code = exitFiles
	}
	return code
}

// writePidfile writes "<pid>\n" to path ("" = none), never through a
// symbolic link, into a FIFO or a device, or to another file's hard link
// (createFile).
func writePidfile(path string) error {
	if path == "" {
		return nil
	}
	dir, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		var fd int
		if fd, err = createFile(dir, cstr(filepath.Base(path)), true, 0o644); err == nil {
			_, err = unix.Write(fd, []byte(strconv.Itoa(os.Getpid())+"\n"))
			unix.Close(fd)
		}
		unix.Close(dir)
	}
	if err != nil {
		return fmt.Errorf("PID file %s: %w", path, err)
	}
	return nil
}

// removePidfile removes path if it is still a regular file holding this
// process's PID; it opens nothing that could block. Where the sandbox lets
// it not be removed (Landlock grants no right on its directory unless it is
// beneath the top directory) it is emptied, which init scripts and
// start-stop-daemon read as "not running".
func removePidfile(path string) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	b := make([]byte, 32)
	n, err := 0, unix.Fstat(fd, &st)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		n, err = unix.Read(fd, b)
	}
	if err != nil || string(b[:max(n, 0)]) != strconv.Itoa(os.Getpid())+"\n" {
		return
	}
	if unix.Unlink(path) != nil {
		unix.Ftruncate(fd, 0)
	}
}

// readiness is how the daemon tells of its start and its presence: the
// starting process's pipe (nil with -f), systemd's socket (with -f) and the
// PID file it wrote ("" when none).
type readiness struct {
	pipe    *os.File
	notify  notifier
	pidfile string
}

func newReadiness(pipe *os.File) readiness { return readiness{pipe: pipe, notify: notifier{fd: -1}} }

// writePid writes the PID file path ("" for none).
func (r *readiness) writePid(path string) error {
	if err := writePidfile(path); err != nil {
		return err
	}
	r.pidfile = path
	return nil
}

// connect connects to systemd's $NOTIFY_SOCKET, if set.
func (r *readiness) connect() (err error) {
	r.notify, err = openNotify()
	return err
}

// report tells the starting process the start's outcome (exitOK, or the
// code and error of a failure), once; the pipe is closed after.
func (r *readiness) report(code int, err error) error {
	if r.pipe == nil {
		return nil
	}
	_, werr := r.pipe.Write(formatReady(code, err)) // the starting process reads this line or EOF
	r.pipe.Close()
	r.pipe = nil
	return werr
}

// notifyReady tells systemd the daemon is ready, and closes the socket.
func (r *readiness) notifyReady() error {
	err := r.notify.send("READY=1")
	r.notify.close()
	return err
}

// close closes the socket and removes the PID file.
func (r *readiness) close() {
	r.notify.close()
	if r.pidfile != "" {
		removePidfile(r.pidfile)
		r.pidfile = ""
	}
}

// notifier is the socket $NOTIFY_SOCKET names (systemd Type=notify),
// connected before the sandbox; fd is -1 when there is none.
type notifier struct {
	fd   int
	path string
}

// openNotify connects to $NOTIFY_SOCKET ("@" starts an abstract name). The
// socket does not block: a notification systemd cannot take at once is an
// error, never a daemon stalled before it is ready.
func openNotify() (notifier, error) {
	n := notifier{fd: -1, path: os.Getenv("NOTIFY_SOCKET")}
	if n.path == "" {
		return n, nil
	}
	addr := n.path
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return n, fmt.Errorf("notify socket %s: %w", n.path, os.NewSyscallError("socket", err))
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		unix.Close(fd)
		return n, fmt.Errorf("notify socket %s: %w", n.path, os.NewSyscallError("connect", err))
	}
	n.fd = fd
	return n, nil
}

// send sends one notification ("READY=1"); nothing without a socket.
func (n *notifier) send(msg string) error {
	if n.fd < 0 {
		return nil
	}
	if _, err := unix.Write(n.fd, []byte(msg)); err != nil {
		return fmt.Errorf("notify socket %s: %s: %w", n.path, msg, os.NewSyscallError("write", err))
	}
	return nil
}

func (n *notifier) close() {
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}
