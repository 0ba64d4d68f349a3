package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// verifiedArches are those where TestIntegrationSandboxSoak ran a log-mode
// daemon through every code path with no seccomp audit record: amd64 here,
// 386 natively on amd64 (make test386), the others on their own kernel under
// qemu-system (make vm VMARCH=...). Elsewhere the daemon logs calls the list
// lacks rather than refusing them.
var verifiedArches = []string{"amd64", "386", "arm64", "arm", "s390x", "ppc64le"}

var update = flag.Bool("update", false, "rewrite zseccomp_GOARCH.go from the allow-list (make seccomp)")

// seccompPolicy is the filter the daemon carries, as go-seccomp-bpf policy
// for goarch, whose system calls are names: allowed, a few calls with
// conditions, killed, default EPERM. Names the architecture lacks are left out.
func seccompPolicy(goarch string, names map[string]int) *seccomp.Policy {
	known := func(n string) bool { _, ok := names[n]; return ok }
	cloneFlags := uint32(0) // clone(flags, ...); s390x passes the stack first
	if goarch == "s390x" {
		cloneFlags = 1
	}
	equal := func(name string, arg uint32, value uint64) seccomp.NameWithConditions {
		return seccomp.NameWithConditions{Name: name, Conditions: seccomp.ArgumentConditions{{Argument: arg, Operation: seccomp.Equal, Value: value}}}
	}
	conditional := []seccomp.NameWithConditions{
		// New runtime threads only, never new processes.
		{Name: "clone", Conditions: seccomp.ArgumentConditions{{Argument: cloneFlags, Operation: seccomp.BitsSet, Value: unix.CLONE_THREAD}}},
		// No socket is made once sandboxed; the two the daemon made before
		// are the only ones it connects or sends to (placeholders, patched
		// at load: loadSeccomp).
		equal("connect", 0, seccompSyslog),
		// Signals to the daemon's own threads only (the runtime's
		// preemption and its crash path), never to another process.
		equal("tgkill", 0, seccompSelf),
		equal("sendto", 0, seccompNetlink),
		// semctl: reading any set (GETPID, GETVAL, GETALL, GETNCNT,
		// GETZCNT: --restart and the loop read the private set too), and
		// removing the public set of the start, nothing else.
		equal("semctl", 2, getPID), equal("semctl", 2, getVal), equal("semctl", 2, getAll),
		equal("semctl", 2, getNcnt), equal("semctl", 2, getZcnt),
		{Name: "semctl", Conditions: seccomp.ArgumentConditions{
			{Argument: 0, Operation: seccomp.Equal, Value: seccompPublic},
			{Argument: 2, Operation: seccomp.Equal, Value: unix.IPC_RMID}}},
		// Where Go reaches sockets through socketcall(2) (386, s390x), the
		// call's arguments are in memory, out of the filter's reach: connect
		// and sendto are allowed on any socket there, socket itself never.
		equal("socketcall", 0, 3),  // SYS_CONNECT
		equal("socketcall", 0, 11), // SYS_SENDTO
	}
	return &seccomp.Policy{
		DefaultAction: seccomp.ActionErrno,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionAllow, Names: slices.DeleteFunc(slices.Clone(allowed), func(n string) bool { return !known(n) }),
				NamesWithCondtions: slices.DeleteFunc(conditional, func(c seccomp.NameWithConditions) bool { return !known(c.Name) })},
			{Action: seccomp.ActionKillProcess, Names: slices.DeleteFunc(slices.Clone(killed), func(n string) bool { return !known(n) })},
		},
	}
}

// otherArches are those go-seccomp-bpf has no syscall table for: their
// programs are assembled by assemble with x/sys's system call numbers.
var otherArches = map[string]uint32{"386": unix.AUDIT_ARCH_I386, "riscv64": unix.AUDIT_ARCH_RISCV64, "ppc64le": unix.AUDIT_ARCH_PPC64LE, "s390x": unix.AUDIT_ARCH_S390X}

// assemble does what Policy.Assemble does, for any architecture: the groups
// through go-seccomp-bpf's Program, behind the same check of the audit
// architecture (and, on x86-64, of the x32 bit).
func assemble(p *seccomp.Policy, names map[string]int, auditArch uint32) ([]bpf.Instruction, error) {
	prog := seccomp.NewProgram()
	for _, g := range p.Syscalls {
		var calls []seccomp.SyscallWithConditions
		add := func(name string, c seccomp.ArgumentConditions) {
			num := uint32(names[name])
			for i := range calls {
				if calls[i].Num == num {
					calls[i].Conditions = append(calls[i].Conditions, c)
					return
				}
			}
			s := seccomp.SyscallWithConditions{Num: num}
			if c != nil {
				s.Conditions = []seccomp.ArgumentConditions{c}
			}
			calls = append(calls, s)
		}
		for _, n := range g.Names {
			add(n, nil)
		}
		for _, nc := range g.NamesWithCondtions {
			add(nc.Name, nc.Conditions)
		}
		action, next := prog.NewLabel(), prog.NewLabel()
		for i, s := range calls {
			s.Assemble(&prog, i < len(calls)-1, action, next)
		}
		prog.SetLabel(action)
		prog.Ret(g.Action)
		prog.SetLabel(next)
	}
	prog.Ret(p.DefaultAction)
	body, err := prog.Assemble()
	if err != nil {
		return nil, err
	}
	var x32 []bpf.Instruction
	if auditArch == unix.AUDIT_ARCH_X86_64 {
		x32 = []bpf.Instruction{
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 0x40000000, SkipFalse: 1}, // __X32_SYSCALL_BIT
			bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)},
		}
	}
	out := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: auditArch, SkipTrue: uint8(len(x32) + len(body))},
		bpf.LoadAbsolute{Off: 0, Size: 4}, // seccomp_data.nr
	}
	return append(append(out, x32...), body...), nil
}

// xsysNames reads the system call numbers of goarch from x/sys's
// zsysnum_linux_GOARCH.go (SYS_FSTAT64 = 197 → "fstat64": 197).
func xsysNames(t *testing.T, goarch string) map[string]int {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.org/x/sys").Output()
	if err != nil {
		t.Fatalf("go list golang.org/x/sys: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "unix", "zsysnum_linux_"+goarch+".go"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s+SYS_(\w+)\s+=\s+(\d+)`).FindAllStringSubmatch(string(b), -1) {
		names[strings.ToLower(m[1])] = atoi(m[2])
	}
	return names
}

func raw(t *testing.T, insts []bpf.Instruction) []unix.SockFilter {
	out := make([]unix.SockFilter, len(insts))
	for i, ins := range insts {
		r, err := ins.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out
}

// TestSeccompFilter checks that the program the daemon carries for this
// architecture is what go-seccomp-bpf assembles from the lists today; with
// -update it rewrites the program instead.
func TestSeccompFilter(t *testing.T) {
	info, err := arch.GetInfo("")
	if err != nil {
		t.Skipf("go-seccomp-bpf has no table for %s: TestSeccompOtherArches checks its program", runtime.GOARCH)
	}
	p := seccompPolicy(runtime.GOARCH, info.SyscallNames)
	insts, err := p.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	prog := raw(t, insts)
	if *update {
		writeFilter(t, runtime.GOARCH, insts, prog)
		return
	}
	if seccompVerified != slices.Contains(verifiedArches, runtime.GOARCH) {
		t.Fatalf("zseccomp_%s.go: seccompVerified = %v, verifiedArches says otherwise (make seccomp)", runtime.GOARCH, seccompVerified)
	}
	if len(prog) != len(seccompFilter) {
		t.Fatalf("zseccomp_%s.go: %d instructions, the allow-list assembles to %d (make seccomp)", runtime.GOARCH, len(seccompFilter), len(prog))
	}
	for i, r := range prog {
		if got := seccompFilter[i]; got != r {
			t.Fatalf("zseccomp_%s.go instruction %d: got %+v, want %v (make seccomp)", runtime.GOARCH, i, got, insts[i])
		}
	}
	if n := countRets(seccompRetEPERM); n != 1 {
		t.Errorf("%d return(s) of the default action, want 1 (the log build rewrites it)", n)
	}
	for _, name := range []string{"read", "write", "openat", "acct", "semtimedop", "recvmmsg", "futex"} {
		if _, ok := info.SyscallNames[name]; ok && !slices.Contains(p.Syscalls[0].Names, name) {
			t.Errorf("%s missing from the allow-list", name)
		}
	}
	for _, name := range []string{"execve", "ptrace", "setuid", "capset", "socket", "clone", "connect", "sendto", "semctl", "tgkill", "kill", "tkill"} {
		if slices.Contains(p.Syscalls[0].Names, name) {
			t.Errorf("%s allowed without condition", name)
		}
	}
	t.Logf("seccomp filter: %d allowed calls (+ clone, connect, sendto, semctl, tgkill with conditions), %d killed, %d BPF instructions",
		len(p.Syscalls[0].Names), len(p.Syscalls[1].Names), len(prog))
}

// TestSeccompOtherArches checks, on amd64, that assemble builds exactly what
// Policy.Assemble built for amd64 from x/sys's numbers, then that the
// programs of otherArches are what assemble builds today (-update writes
// them). go-seccomp-bpf places an argument's low 32 bits by the byte order
// of the machine it runs on: big-endian programs are checked and written on
// s390x (under qemu-s390x: make seccomp, make qemu), little-endian on amd64.
func TestSeccompOtherArches(t *testing.T) {
	bigEndian := map[string]bool{"s390x": true}
	switch runtime.GOARCH {
	case "amd64":
		names := xsysNames(t, "amd64")
		insts, err := assemble(seccompPolicy("amd64", names), names, unix.AUDIT_ARCH_X86_64)
		if err != nil {
			t.Fatal(err)
		}
		if got := raw(t, insts); !slices.Equal(got, seccompFilter) {
			t.Fatalf("assemble differs from go-seccomp-bpf's Policy.Assemble on amd64: %d vs %d instructions", len(got), len(seccompFilter))
		}
	case "s390x":
	default:
		t.Skip("run on amd64 (little-endian programs) or s390x (big-endian)")
	}
	for goarch, auditArch := range otherArches {
		if bigEndian[goarch] != bigEndian[runtime.GOARCH] {
			continue
		}
		names := xsysNames(t, goarch)
		insts, err := assemble(seccompPolicy(goarch, names), names, auditArch)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			writeFilter(t, goarch, insts, raw(t, insts))
			continue
		}
		want := renderFilter(t, goarch, insts, raw(t, insts))
		if got, _ := os.ReadFile("zseccomp_" + goarch + ".go"); !bytes.Equal(got, want) {
			t.Errorf("zseccomp_%s.go is not what the lists assemble to today (make seccomp)", goarch)
		}
	}
}

func countRets(k uint32) (n int) {
	for _, ins := range seccompFilter {
		if ins.Code == bpfRet && ins.K == k {
			n++
		}
	}
	return n
}

// renderFilter is zseccomp_GOARCH.go: one instruction a line, with its
// disassembly.
func renderFilter[I any](t *testing.T, goarch string, insts []I, raw []unix.SockFilter) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "// Code generated by go test -run TestSeccomp -update (make seccomp); DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "package main\n\nimport \"golang.org/x/sys/unix\"\n\n")
	fmt.Fprintf(&b, "// seccompVerified: whether a log-mode soak of a daemon on %s found no call\n", goarch)
	fmt.Fprintf(&b, "// outside the list (verifiedArches in sandbox_test.go); if not, such calls\n")
	fmt.Fprintf(&b, "// are logged, not refused.\n")
	fmt.Fprintf(&b, "const seccompVerified = %v\n\n", slices.Contains(verifiedArches, goarch))
	fmt.Fprintf(&b, "// seccompFilter for %s: see allowed and killed in sandbox.go.\n", goarch)
	fmt.Fprintf(&b, "var seccompFilter = []unix.SockFilter{\n")
	for i, r := range raw {
		fmt.Fprintf(&b, "\t{Code: %#04x, Jt: %d, Jf: %d, K: %#x}, // %v\n", r.Code, r.Jt, r.Jf, r.K, insts[i])
	}
	b.WriteString("}\n")
	src, err := format.Source([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func writeFilter[I any](t *testing.T, goarch string, insts []I, raw []unix.SockFilter) {
	name := "zseccomp_" + goarch + ".go"
	if err := os.WriteFile(name, renderFilter(t, goarch, insts, raw), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: %d instructions", name, len(raw))
}

// probeSandboxEnv makes the re-executed test binary apply the daemon's
// sandbox to itself and try one thing (TestMain): "probe:topdir".
const probeSandboxEnv = "ATOPACCTD_TEST_SANDBOX"

// probeEnv is what a probe child made before its sandbox, as the daemon
// makes it: the top directory with a source file, the shadow directory and
// a file of someone else's; a PID file with a file beside it; a unix socket
// (the syslog's stand-in) and two sockets (one connected as the logger's);
// the public set and another root-owned set.
type probeEnv struct {
	top, syslog, other, public, foreign int
	dir, sock                           string // the PID file's directory; the socket's path
}

// Keys of the sets a probe child makes (removed by TestIntegrationSandboxRefusals).
const probePublicKey, probeForeignKey = 0x7e570001, 0x7e570002

// probeSandbox prints "allowed" or "refused: <errno>"; calls the filter
// kills end the process by SIGSYS instead.
func probeSandbox(spec string) {
	probe, top, _ := strings.Cut(spec, ":")
	e := probeEnv{dir: top + ".piddir"}
	e.sock = filepath.Join(e.dir, "log")
	step := func(err error) {
		if err != nil {
			fmt.Println("setup:", err)
			os.Exit(2)
		}
	}
	var err error
	e.top, err = unix.Open(top, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	step(err)
	fd, err := unix.Openat(e.top, sourceName, unix.O_RDWR|unix.O_CREAT, 0o600)
	step(err)
	step(unix.Dup2(fd, probeSource))
	step(os.WriteFile(filepath.Join(top, "other"), nil, 0o644))
	step(os.Mkdir(filepath.Join(top, shadowDir), 0o755))
	shadow, err := unix.Open(filepath.Join(top, shadowDir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	step(err)
	step(os.Mkdir(e.dir, 0o755))
	step(os.WriteFile(filepath.Join(e.dir, "atopacctd.pid"), []byte("1\n"), 0o644))
	step(os.WriteFile(filepath.Join(e.dir, "other"), nil, 0o644))
	for _, fd := range []*int{&e.syslog, &e.other} {
		*fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		step(err)
	}
	server, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	step(err)
	step(unix.Bind(server, &unix.SockaddrUnix{Name: e.sock}))
	step(unix.Connect(e.syslog, &unix.SockaddrUnix{Name: e.sock}))
	e.public, err = semget(probePublicKey, 2, unix.IPC_CREAT|0o666)
	step(err)
	e.foreign, err = semget(probeForeignKey, 1, unix.IPC_CREAT|0o600)
	step(err)
	c := sandboxConfig{top: e.top, shadow: shadow, sources: []int{probeSource}, pidfile: filepath.Join(e.dir, "atopacctd.pid"),
		syslog: e.syslog, netlink: -1, public: e.public}
	apply := func() error { _, err := sandbox(c); return err }
	if probe == "secure bits locked" {
		apply = dropCapabilities // reading them takes prctl, which the filter refuses
	}
	if err := apply(); err != nil {
		fmt.Println("setup: sandbox:", err)
		os.Exit(2)
	}
	err = sandboxProbes[probe](e)
	if err == nil {
		fmt.Println("allowed")
	} else {
		fmt.Println("refused:", err)
	}
	os.Exit(0)
}

var sandboxProbes = map[string]func(e probeEnv) error{
	"execve": func(probeEnv) error { return syscall.Exec("/bin/true", []string{"true"}, nil) },
	"ptrace": func(probeEnv) error {
		_, _, e := syscall.RawSyscall(syscall.SYS_PTRACE, syscall.PTRACE_ATTACH, 1, 0)
		return errnoErr(e)
	},
	"socket AF_INET": func(probeEnv) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		unix.Close(fd)
		return err
	},
	"socket AF_UNIX": func(probeEnv) error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		unix.Close(fd)
		return err
	},
	"connect the syslog socket again": func(e probeEnv) error {
		return unix.Connect(e.syslog, &unix.SockaddrUnix{Name: e.sock})
	},
	"connect another socket": func(e probeEnv) error {
		return unix.Connect(e.other, &unix.SockaddrUnix{Name: e.sock})
	},
	"remove the public set": func(e probeEnv) error {
		_, err := semctl(e.public, 0, unix.IPC_RMID, nil)
		return err
	},
	"remove another root set": func(e probeEnv) error {
		_, err := semctl(e.foreign, 0, unix.IPC_RMID, nil)
		return err
	},
	"read another root set": func(e probeEnv) error {
		_, err := semctl(e.foreign, 0, getVal, nil)
		return err
	},
	"write a file in the shadow directory": func(e probeEnv) error {
		return os.WriteFile(fmt.Sprintf("/proc/self/fd/%d/%s/current", e.top, shadowDir), []byte("0/1\n"), 0o644)
	},
	"write a file beneath the top directory": func(e probeEnv) error {
		return writeAt(e.top, "other")
	},
	"create a file beneath the top directory": func(e probeEnv) error {
		return writeAt(e.top, "new")
	},
	"empty the PID file": func(e probeEnv) error {
		fd, err := unix.Open(filepath.Join(e.dir, "atopacctd.pid"), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Ftruncate(fd, 0)
			unix.Close(fd)
		}
		return err
	},
	"unlink beside the PID file": func(e probeEnv) error {
		return unix.Unlink(filepath.Join(e.dir, "other"))
	},
	"write /etc/passwd": func(probeEnv) error {
		fd, err := unix.Open("/etc/passwd", unix.O_WRONLY|unix.O_APPEND, 0)
		unix.Close(fd)
		return err
	},
	"setuid": func(probeEnv) error {
		_, _, e := syscall.RawSyscall(syscall.SYS_SETUID, 65534, 0, 0)
		return errnoErr(e)
	},
	"raise CAP_SYS_ADMIN": func(probeEnv) error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		data := [2]unix.CapUserData{{Effective: 1 << unix.CAP_SYS_ADMIN, Permitted: 1 << unix.CAP_SYS_ADMIN}}
		return unix.Capset(&hdr, &data[0])
	},
	"secure bits locked": func(probeEnv) error {
		const want = cap.SecbitNoRoot | cap.SecbitNoRootLocked | cap.SecbitNoSetUIDFixup | cap.SecbitNoSetUIDFixupLocked |
			cap.SecbitKeepCapsLocked | cap.SecbitNoCapAmbientRaise | cap.SecbitNoCapAmbientRaiseLocked
		if got := cap.GetSecbits(); got != want {
			return fmt.Errorf("secure bits %#x, want %#x", got, want)
		}
		return nil
	},
	"not dumpable": func(probeEnv) error {
		if v, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); v != 0 {
			return fmt.Errorf("dumpable %d", v)
		}
		return nil
	},
	"signal another process": func(probeEnv) error {
		_, _, e := syscall.RawSyscall(syscall.SYS_TGKILL, 1, 1, 0) // signal 0: nothing is delivered
		return errnoErr(e)
	},
	"signal its own thread": func(probeEnv) error {
		_, _, e := syscall.RawSyscall(syscall.SYS_TGKILL, uintptr(os.Getpid()), uintptr(unix.Gettid()), 0)
		return errnoErr(e)
	},
	"acct on a source file": func(probeEnv) error {
		if err := acct(cstr(fmt.Sprintf("/proc/self/fd/%d", probeSource))); err != nil {
			return err
		}
		return acct(nil)
	},
}

// writeAt opens name in dir for writing, creating it.
func writeAt(dir int, name string) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	unix.Close(fd)
	return err
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
	unixConnect := "refused: operation not permitted"
	if runtime.GOARCH == "386" || runtime.GOARCH == "s390x" {
		// Through socketcall(2): the arguments are out of the filter's
		// reach. socketcall(SYS_SOCKET) is refused all the same.
		unixConnect = "allowed"
	}
	t.Cleanup(func() {
		for _, key := range []int{probePublicKey, probeForeignKey} {
			if id, err := semget(key, 0, 0); err == nil {
				semctl(id, 0, unix.IPC_RMID, nil)
			}
		}
	})
	for _, tt := range []struct {
		probe  string
		killed bool   // by the seccomp filter (SIGSYS)
		want   string // the child's line
	}{
		{"execve", true, ""},
		{"ptrace", true, ""},
		{"socket AF_INET", false, "refused: operation not permitted"},
		{"socket AF_UNIX", false, "refused: operation not permitted"},
		{"connect the syslog socket again", false, "allowed"},
		{"connect another socket", false, unixConnect},
		{"remove the public set", false, "allowed"},
		{"remove another root set", false, "refused: operation not permitted"},
		{"read another root set", false, "allowed"},
		{"write a file in the shadow directory", false, "allowed"},
		{"write a file beneath the top directory", false, "refused: permission denied"}, // Landlock
		{"create a file beneath the top directory", false, "refused: permission denied"},
		{"empty the PID file", false, "allowed"},
		{"unlink beside the PID file", false, "refused: permission denied"},
		{"write /etc/passwd", false, "refused: permission denied"},
		{"setuid", false, "refused: operation not permitted"},
		{"raise CAP_SYS_ADMIN", false, "refused:"},
		{"secure bits locked", false, "allowed"},
		{"not dumpable", false, "allowed"},
		{"acct on a source file", false, "allowed"},
		{"signal another process", false, "refused: operation not permitted"},
		{"signal its own thread", false, "allowed"},
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
// any call missing from the allow-list shows there as an audit record
// (every one: the kernel's printk rate limit is off for the test).
func TestIntegrationSandboxSoak(t *testing.T) {
	integration(t)
	bin := daemonBinary(t, "-X main.seccompDefault=log")
	sysctl(t, "kernel/printk_ratelimit", "0") // where it cannot, records may be dropped
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
			d.start(t, bin, exec.Command(argv[0], argv[1:]...))
			checkThreads(t, d.pid)
			c := attached(t, top)
			follow(t, c, storm(t, 5000))        // copy, 50 shadow and 19 source rotations
			d.signal(t, unix.SIGUSR1)           // counters to syslog
			time.Sleep(1500 * time.Millisecond) // GC
			dir := filepath.Join(top, shadowDir)
			os.Remove(filepath.Join(dir, currentName)) // repairs
			time.Sleep(1200 * time.Millisecond)
			seqOf := func() int64 {
				b, _ := os.ReadFile(filepath.Join(dir, currentName))
				seq, _, _ := parseCurrent(b)
				return seq
			}
			seq := seqOf()
			os.Remove(filepath.Join(dir, pafName(seq)))
			waitFor(t, 5*time.Second, "the shadow file to be recreated", func() bool { return seqOf() > seq })
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
			re := regexp.MustCompile(`type=1326 .* pid=` + strconv.Itoa(pid) + ` .* arch=([0-9a-f]+) syscall=(\d+)`)
			for _, m := range re.FindAllStringSubmatch(out, -1) {
				n, _ := strconv.Atoi(m[2])
				name := m[2]
				for _, info := range []*arch.Info{arch.X86_64, arch.I386, arch.AARCH64, arch.ARM} {
					if fmt.Sprintf("%x", uint32(info.ID)) == m[1] {
						name = info.SyscallNumbers[n]
					}
				}
				t.Errorf("seccomp would deny %s (%s, arch %s)", name, m[2], m[1])
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
