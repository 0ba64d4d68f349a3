package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Starting: exit codes, readiness, priority, internal modes and inherited descriptors.

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
