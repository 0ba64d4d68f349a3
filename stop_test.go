package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Stopping: every signal that ends the daemon cleans up first.

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
