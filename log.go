// Logging: stderr in the foreground, syslog when daemonized.
// Speaks the syslog(3) datagram format of RFC 3164 over the unix(7) socket
// /dev/log, facility LOG_DAEMON, ident "atopacctd" with the pid; on a stderr
// that is systemd's journal ($JOURNAL_STREAM, systemd.exec(5)), the "<N>"
// priority prefix of sd-daemon(3).

package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

const (
	logDaemon  = 3 << 3 // LOG_DAEMON
	logErr     = 3      // LOG_ERR
	logWarning = 4      // LOG_WARNING
	logNotice  = 5      // LOG_NOTICE
	logInfo    = 6      // LOG_INFO
	syslogPath = "/dev/log"
)

// logger writes short lines to stderr, or to syslog without ever blocking:
// a line that syslog cannot take at once is dropped, and counted.
type logger struct {
	stderr    io.Writer // nil when daemonized
	journal   bool      // stderr is the journal's stream
	fd        int       // syslog socket, -1 until made
	connected bool
	pid       int
	dropped   uint64 // lines syslog did not take
}

func newLogger(stderr io.Writer) *logger {
	return &logger{stderr: stderr, journal: journalStream(stderr), fd: -1, pid: os.Getpid()}
}

// journalStream reports whether w is the stream $JOURNAL_STREAM names
// ("device:inode"): the journal then takes a line's priority from its
// "<N>" prefix and adds the name and pid itself.
func journalStream(w io.Writer) bool {
	f, ok := w.(*os.File)
	var st unix.Stat_t
	if !ok || unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	return os.Getenv("JOURNAL_STREAM") == strconv.FormatUint(uint64(st.Dev), 10)+":"+strconv.FormatUint(st.Ino, 10)
}

func (l *logger) errorf(format string, args ...any)  { l.printf(logErr, format, args...) }
func (l *logger) warnf(format string, args ...any)   { l.printf(logWarning, format, args...) }
func (l *logger) noticef(format string, args ...any) { l.printf(logNotice, format, args...) }
func (l *logger) infof(format string, args ...any)   { l.printf(logInfo, format, args...) }

func (l *logger) printf(pri int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	switch {
	case l.journal:
		fmt.Fprintf(l.stderr, "<%d>%s\n", pri, msg)
		return
	case l.stderr != nil:
		fmt.Fprintf(l.stderr, "atopacctd: %s\n", msg)
		return
	}
	line := fmt.Sprintf("<%d>%s atopacctd[%d]: %s", logDaemon|pri, time.Now().Format(time.Stamp), l.pid, msg)
	for try := 0; try < 2; try++ {
		if !l.connected && !l.connect() {
			break
		}
		_, err := unix.Write(l.fd, []byte(line))
		if err == nil {
			return
		}
		if err == unix.EAGAIN {
			break // syslog is behind: drop the line rather than wait
		}
		l.connected = false // syslog restarted (ECONNREFUSED): connect again, once
	}
	l.dropped++
}

// connect connects the syslog socket, made on the first call: the sandbox
// lets no socket be made later, but a datagram socket may be connected
// again, to the socket a restarted syslog made.
func (l *logger) connect() bool {
	if l.fd < 0 {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return false
		}
		l.fd = fd
	}
	l.connected = unix.Connect(l.fd, &unix.SockaddrUnix{Name: syslogPath}) == nil
	return l.connected
}
