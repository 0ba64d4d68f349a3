package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

func TestSeccompPolicy(t *testing.T) {
	p, err := seccompPolicy()
	if err != nil {
		t.Fatal(err)
	}
	insts, err := p.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	info, _ := arch.GetInfo("")
	for _, name := range []string{"read", "write", "openat", "acct", "semtimedop", "recvmmsg", "futex"} {
		if _, ok := info.SyscallNames[name]; ok && !contains(p.Syscalls[0].Names, name) {
			t.Errorf("%s missing from the allow-list", name)
		}
	}
	for _, name := range []string{"execve", "ptrace", "setuid", "capset", "socket", "clone"} {
		if contains(p.Syscalls[0].Names, name) {
			t.Errorf("%s allowed without condition", name)
		}
	}
	t.Logf("seccomp filter: %d allowed calls (+ clone, socket with conditions), %d killed, %d BPF instructions",
		len(p.Syscalls[0].Names), len(p.Syscalls[1].Names), len(insts))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// probeSandboxEnv makes the re-executed test binary apply the daemon's
// sandbox to itself and try one thing (TestMain): "probe:topdir".
const probeSandboxEnv = "ATOPACCTD_TEST_SANDBOX"

// probeSandbox prints "allowed" or "refused: <errno>"; calls the filter
// kills end the process by SIGSYS instead.
func probeSandbox(spec string) {
	probe, top, _ := strings.Cut(spec, ":")
	topfd, err := unix.Open(top, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		var fd int
		if fd, err = unix.Openat(topfd, sourceName, unix.O_RDWR|unix.O_CREAT, 0o600); err == nil {
			err = unix.Dup2(fd, probeSource)
		}
	}
	if err != nil {
		fmt.Println("setup:", err)
		os.Exit(2)
	}
	apply := func() error { _, err := sandbox(sandboxConfig{top: topfd, sources: []int{probeSource}}); return err }
	if probe == "secure bits locked" {
		apply = dropCapabilities // reading them takes prctl, which the filter refuses
	}
	if err := apply(); err != nil {
		fmt.Println("setup: sandbox:", err)
		os.Exit(2)
	}
	err = sandboxProbes[probe](topfd)
	if err == nil {
		fmt.Println("allowed")
	} else {
		fmt.Println("refused:", err)
	}
	os.Exit(0)
}

var sandboxProbes = map[string]func(top int) error{
	"execve": func(int) error { return syscall.Exec("/bin/true", []string{"true"}, nil) },
	"ptrace": func(int) error {
		_, _, e := syscall.RawSyscall(syscall.SYS_PTRACE, syscall.PTRACE_ATTACH, 1, 0)
		return errnoErr(e)
	},
	"socket AF_INET": func(int) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		unix.Close(fd)
		return err
	},
	"socket AF_UNIX": func(int) error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		unix.Close(fd)
		return err
	},
	"write /etc/passwd": func(int) error {
		fd, err := unix.Open("/etc/passwd", unix.O_WRONLY|unix.O_APPEND, 0)
		unix.Close(fd)
		return err
	},
	"setuid": func(int) error {
		_, _, e := syscall.RawSyscall(syscall.SYS_SETUID, 65534, 0, 0)
		return errnoErr(e)
	},
	"raise CAP_SYS_ADMIN": func(int) error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		data := [2]unix.CapUserData{{Effective: 1 << unix.CAP_SYS_ADMIN, Permitted: 1 << unix.CAP_SYS_ADMIN}}
		return unix.Capset(&hdr, &data[0])
	},
	"secure bits locked": func(int) error {
		const want = cap.SecbitNoRoot | cap.SecbitNoRootLocked | cap.SecbitNoSetUIDFixup | cap.SecbitNoSetUIDFixupLocked |
			cap.SecbitKeepCapsLocked | cap.SecbitNoCapAmbientRaise | cap.SecbitNoCapAmbientRaiseLocked
		if got := cap.GetSecbits(); got != want {
			return fmt.Errorf("secure bits %#x, want %#x", got, want)
		}
		return nil
	},
	"not dumpable": func(int) error {
		if v, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); v != 0 {
			return fmt.Errorf("dumpable %d", v)
		}
		return nil
	},
	"acct on a source file": func(top int) error {
		if err := acct(cstr(fmt.Sprintf("/proc/self/fd/%d", probeSource))); err != nil {
			return err
		}
		return acct(nil)
	},
}

// probeSource is the file descriptor of the source file the probe child
// makes in the top directory before it applies the sandbox, as the daemon does.
const probeSource = 9

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func TestIntegrationSandboxRefusals(t *testing.T) {
	integration(t)
	for _, tt := range []struct {
		probe  string
		killed bool   // by the seccomp filter (SIGSYS)
		want   string // the child's line
	}{
		{"execve", true, ""},
		{"ptrace", true, ""},
		{"socket AF_INET", false, "refused: operation not permitted"},
		{"socket AF_UNIX", false, "allowed"},
		{"write /etc/passwd", false, "refused: permission denied"}, // Landlock
		{"setuid", false, "refused: operation not permitted"},
		{"raise CAP_SYS_ADMIN", false, "refused:"},
		{"secure bits locked", false, "allowed"},
		{"not dumpable", false, "allowed"},
		{"acct on a source file", false, "allowed"},
	} {
		t.Run(tt.probe, func(t *testing.T) {
			top := newTop(t)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), probeSandboxEnv+"="+tt.probe+":"+top)
			out, err := cmd.Output()
			line := strings.TrimSpace(string(out))
			var ee *exec.ExitError
			if tt.killed {
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGSYS {
					t.Errorf("child: %v, %q; want it killed by SIGSYS", err, line)
				}
				return
			}
			if err != nil || !strings.HasPrefix(line, tt.want) {
				t.Errorf("child: %v, %q; want %q", err, line, tt.want)
			}
		})
	}
}

// TestIntegrationSandboxSoak runs the daemon built with the filter's default
// action "log" through every code path it has, then reads the kernel log:
// any call missing from the allow-list shows there as an audit record.
func TestIntegrationSandboxSoak(t *testing.T) {
	integration(t)
	bin := daemonBinary(t, "-X main.seccompDefault=log")
	for _, mode := range []struct {
		name string
		wrap []string
	}{{"netlink", nil}, {"polling", []string{"unshare", "-n"}}} {
		t.Run(mode.name, func(t *testing.T) {
			top := newTop(t)
			logBefore := kernelLog(t)
			d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "pid")}
			argv := append(mode.wrap, bin, "--pidfile", d.pidfile, "--records", "100", "--source-max", "16384",
				"--gc-interval", "1s", "--poll", "200ms", top)
			d.start(t, exec.Command(argv[0], argv[1:]...))
			checkThreads(t, d.pid)
			c := attached(t, top)
			follow(t, c, storm(t, 20000))       // copy, shadow rotation, source rotation
			unix.Kill(d.pid, unix.SIGUSR1)      // counters to syslog
			time.Sleep(1500 * time.Millisecond) // GC
			dir := filepath.Join(top, shadowDir)
			os.Remove(filepath.Join(dir, currentName)) // repairs
			time.Sleep(1200 * time.Millisecond)
			os.RemoveAll(dir)
			c.poll() // re-attaches once the directory is back
			waitFor(t, 5*time.Second, "the shadow directory to be recreated", func() bool {
				_, err := os.Stat(filepath.Join(dir, currentName))
				return err == nil
			})
			c.detach()
			storm(t, 10) // client-less reset
			time.Sleep(500 * time.Millisecond)
			pid := d.pid
			d.stop(t, unix.SIGTERM)
			if names, _ := readNames(mustOpen(t, top)); len(names) != 0 {
				t.Errorf("top directory after shutdown: %v", names)
			}
			// Only what the kernel logged since this daemon started: an
			// earlier process may have had the same pid.
			out := kernelLog(t)
			if last := strings.LastIndex(logBefore, "\n"); last > 0 {
				if i := strings.Index(out, logBefore[strings.LastIndex(logBefore[:last], "\n")+1:]); i >= 0 {
					out = out[i:]
				}
			}
			re := regexp.MustCompile(`type=1326 .* pid=` + strconv.Itoa(pid) + ` .* syscall=(\d+)`)
			for _, m := range re.FindAllStringSubmatch(out, -1) {
				info, _ := arch.GetInfo("")
				n, _ := strconv.Atoi(m[1])
				t.Errorf("seccomp would deny %s (%s)", info.SyscallNumbers[n], m[1])
			}
		})
	}
}

// TestIntegrationSandboxFailure builds the daemon with cgo, where libcap's
// psx and AllThreadsSyscall cannot act on every thread: the sandbox cannot be
// applied, which must be fatal (exit 9) after a full clean-up.
func TestIntegrationSandboxFailure(t *testing.T) {
	integration(t)
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc: cannot build the cgo variant")
	}
	bin := filepath.Join(t.TempDir(), "atopacctd-cgo")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build with cgo: %v: %s", err, out)
	}
	top := newTop(t)
	out, err := exec.Command(bin, "-f", "--pidfile", "", top).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitSandbox || !strings.Contains(string(out), "sandbox:") {
		t.Fatalf("cgo build: %v, %q; want exit %d naming the sandbox", err, out, exitSandbox)
	}
	if names, _ := readNames(mustOpen(t, top)); len(names) != 0 {
		t.Errorf("a failed sandbox left %v in the top directory", names)
	}
}

// kernelLog returns the kernel's message buffer (dmesg).
func kernelLog(t *testing.T) string {
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		t.Fatalf("dmesg: %v (the soak reads seccomp audit records from it)", err)
	}
	return string(out)
}

// checkThreads asserts the sandbox on every thread of pid.
func checkThreads(t *testing.T, pid int) {
	t.Helper()
	want := map[string]string{
		"CapInh": "0000000000000000", "CapPrm": "0000000000100000", "CapEff": "0000000000100000",
		"CapBnd": "0000000000100000", "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if _, rest, _ := strings.Cut(string(st), ") "); len(strings.Fields(rest)) < 17 || strings.Fields(rest)[16] != "-20" {
			t.Errorf("thread %s: nice is not -20: %s", task.Name(), st) // field 19 of stat
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			if w, ok := want[k]; ok && strings.TrimSpace(v) != w {
				t.Errorf("thread %s: %s %s, want %s", task.Name(), k, strings.TrimSpace(v), w)
			}
		}
	}
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if !regexp.MustCompile(`Max core file size\s+0\s+0`).Match(limits) ||
		!regexp.MustCompile(`Max open files\s+`+strconv.Itoa(maxOpenFiles)+`\s`).Match(limits) {
		t.Errorf("limits:\n%s", limits)
	}
}
