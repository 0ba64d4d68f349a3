package main

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// exitMsg builds the message the kernel sends for an exit (what = EXIT).
func exitMsg(what, pid, tgid uint32) []byte {
	b := make([]byte, exitMsgLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], exitMsgLen)
	ne.PutUint16(b[4:], unix.NLMSG_DONE)
	ne.PutUint32(b[offCnIdx:], cnIdxProc)
	ne.PutUint32(b[offCnVal:], cnValProc)
	ne.PutUint16(b[offCnLen:], sizeofProcEvent)
	ne.PutUint32(b[offWhat:], what)
	ne.PutUint32(b[offExitPid:], pid)
	ne.PutUint32(b[offExitTid:], tgid)
	return b
}

func TestEncodeListen(t *testing.T) {
	b := encodeListen(procCnMcastListen)
	ne := binary.NativeEndian
	for _, tt := range []struct {
		name      string
		got, want uint32
	}{
		{"nlmsg_len", ne.Uint32(b[0:]), sizeofListen},
		{"nlmsg_type", uint32(ne.Uint16(b[4:])), unix.NLMSG_DONE},
		{"id.idx", ne.Uint32(b[offCnIdx:]), cnIdxProc},
		{"id.val", ne.Uint32(b[offCnVal:]), cnValProc},
		{"len", uint32(ne.Uint16(b[offCnLen:])), 4},
		{"op", ne.Uint32(b[sizeofListen-4:]), procCnMcastListen},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %d, want %d", tt.got, tt.want)
			}
		})
	}
}

func TestParseExitAndFilter(t *testing.T) {
	short := exitMsg(procEventExit, 5, 5)[:exitMsgLen-1]
	badLen := exitMsg(procEventExit, 5, 5)
	binary.NativeEndian.PutUint32(badLen, 1000)
	otherIdx := exitMsg(procEventExit, 5, 5)
	binary.NativeEndian.PutUint32(otherIdx[offCnIdx:], 2)
	for _, tt := range []struct {
		name   string
		msg    []byte
		ok     bool // parseExit accepts
		accept bool // the socket filter passes it
	}{
		{"process exit", exitMsg(procEventExit, 100, 100), true, true},
		{"thread exit", exitMsg(procEventExit, 101, 100), true, false},
		{"fork", exitMsg(0x00000001, 100, 100), false, false},
		{"ack (PROC_EVENT_NONE)", exitMsg(0, 0, 0), false, false},
		{"other connector", otherIdx, false, false},
		{"short", short, false, false},
		{"length field past the data", badLen, false, true},
		{"empty", nil, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pid, _, ok := parseExit(tt.msg)
			if ok != tt.ok || ok && pid != binary.NativeEndian.Uint32(tt.msg[offExitPid:]) {
				t.Errorf("parseExit: got pid %d, %v; want %v", pid, ok, tt.ok)
			}
			if got := runFilter(t, exitFilter(), tt.msg) != 0; got != tt.accept {
				t.Errorf("filter accepts: got %v, want %v", got, tt.accept)
			}
		})
	}
}

func FuzzExitFilter(f *testing.F) {
	f.Add(exitMsg(procEventExit, 1, 1))
	f.Add(exitMsg(procEventExit, 1, 2))
	f.Add([]byte{1, 2, 3})
	prog := exitFilter()
	f.Fuzz(func(t *testing.T, msg []byte) {
		pid, tgid, ok := parseExit(msg)
		accepted := runFilter(t, prog, msg) != 0
		if ok && pid == tgid && !accepted {
			t.Errorf("filter drops a process exit: %x", msg)
		}
		ne := binary.NativeEndian
		want := len(msg) >= exitMsgLen && ne.Uint32(msg[offCnIdx:]) == cnIdxProc && ne.Uint32(msg[offCnVal:]) == cnValProc &&
			ne.Uint32(msg[offWhat:]) == procEventExit && ne.Uint32(msg[offExitPid:]) == ne.Uint32(msg[offExitTid:])
		if accepted != want {
			t.Errorf("filter accepts %v, want %v: %x", accepted, want, msg)
		}
	})
}

// runFilter interprets the classic BPF instructions the exit filter uses, as
// the kernel does: word loads in network byte order, an out-of-range load
// drops the packet.
func runFilter(t testing.TB, prog []unix.SockFilter, pkt []byte) uint32 {
	var a, x uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			if int(in.K)+4 > len(pkt) {
				return 0
			}
			a = binary.BigEndian.Uint32(pkt[in.K:])
		case unix.BPF_LD | unix.BPF_W | unix.BPF_LEN:
			a = uint32(len(pkt))
		case unix.BPF_MISC | unix.BPF_TAX:
			x = a
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_X:
			v := in.K
			if in.Code&unix.BPF_X != 0 {
				v = x
			}
			if a == v {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			if a >= in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("instruction %d: code %#x not interpreted", pc, in.Code)
		}
	}
	t.Fatal("program fell off its end")
	return 0
}

// BenchmarkNetlinkDrain measures draining 64 queued exit events, through a
// datagram socket pair standing in for the proc connector.
func BenchmarkNetlinkDrain(b *testing.B) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[1])
	c := &procConn{fd: fds[0]}
	defer unix.Close(fds[0])
	c.setBuffers()
	unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	msg := exitMsg(procEventExit, 7, 7)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := 0; j < recvBatch; j++ {
			unix.Write(fds[1], msg)
		}
		b.StartTimer()
		if n, _, err := c.drain(); err != nil || n != recvBatch {
			b.Fatalf("drained %d, %v", n, err)
		}
	}
}
