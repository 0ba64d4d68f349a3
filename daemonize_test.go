package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadyLine(t *testing.T) {
	for _, tt := range []struct {
		name string
		code int
		err  error
		line string
	}{
		{"ready", exitOK, nil, "ready\n"},
		{"accounting refused", exitAcct, errors.New("switch accounting on: acct: operation not permitted"), "6 switch accounting on: acct: operation not permitted\n"},
		{"an error of two lines stays one", exitFiles, errors.New("create a\nb: no space"), "5 create a b: no space\n"},
		{"no error text", exitInternal, nil, "8 failed\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			line := string(formatReady(tt.code, tt.err))
			if line != tt.line {
				t.Fatalf("formatReady: %q, want %q", line, tt.line)
			}
			ready, code, msg, ok := parseReady(strings.TrimSuffix(line, "\n"))
			if !ok || ready != (tt.code == exitOK) || code != tt.code || tt.err != nil && msg != strings.ReplaceAll(tt.err.Error(), "\n", " ") {
				t.Errorf("parseReady: %v %d %q %v; want the report back", ready, code, msg, ok)
			}
		})
	}
	for _, line := range []string{"", "ready now", "readyx", "0 ok", "abc def", "300 too big", "-1 negative", "6"} {
		if _, _, _, ok := parseReady(line); ok {
			t.Errorf("parseReady(%q) accepted it", line)
		}
	}
}

// TestNotify: $NOTIFY_SOCKET that cannot be reached, and one whose queue is
// full, are errors naming the socket (the daemon logs them), never silence
// or a daemon blocked before it is ready.
func TestNotify(t *testing.T) {
	dir := t.TempDir()
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "missing")
		t.Setenv("NOTIFY_SOCKET", path)
		n, err := openNotify()
		if n.fd >= 0 || !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), path) {
			t.Errorf("got fd %d, %v; want an ENOENT error naming %s", n.fd, err, path)
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		n, err := openNotify()
		if n.fd >= 0 || err != nil || n.send("READY=1") != nil {
			t.Errorf("got fd %d, %v; want no socket and no error", n.fd, err)
		}
	})
	for _, name := range []string{filepath.Join(dir, "notify"), fmt.Sprintf("@atopacctd-test-%d", unix.Getpid())} {
		t.Run(name, func(t *testing.T) {
			addr := &net.UnixAddr{Name: name, Net: "unixgram"}
			conn, err := net.ListenUnixgram("unixgram", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			t.Setenv("NOTIFY_SOCKET", name)
			n, err := openNotify()
			if err != nil {
				t.Fatal(err)
			}
			defer n.close()
			if err := n.send("READY=1"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			if k, _ := conn.Read(buf); string(buf[:k]) != "READY=1" {
				t.Errorf("received %q, want READY=1", buf[:k])
			}
			// Nobody reads: the queue fills, and send says so at once.
			var last error
			for i := 0; i < 100000 && last == nil; i++ {
				last = n.send("READY=1")
			}
			if !errors.Is(last, unix.EAGAIN) || !strings.Contains(last.Error(), name) {
				t.Errorf("send to a full queue: %v; want EAGAIN naming %s", last, name)
			}
		})
	}
}
