// Process exit events from the kernel's proc connector: the daemon's cue to
// read the source file.
// Speaks netlink(7), include/uapi/linux/connector.h, include/uapi/linux/cn_proc.h,
// Documentation/driver-api/connector.rst, socket(7) (SO_ATTACH_FILTER) and
// recvmmsg(2).

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	cnIdxProc         = 0x1        // #define CN_IDX_PROC 0x1
	cnValProc         = 0x1        // #define CN_VAL_PROC 0x1
	procCnMcastListen = 1          // enum proc_cn_mcast_op: PROC_CN_MCAST_LISTEN
	procCnMcastIgnore = 2          // PROC_CN_MCAST_IGNORE
	procEventExit     = 0x80000000 // enum what: PROC_EVENT_EXIT

	recvBatch = 64   // messages per recvmmsg(2)
	rcvBuf    = 2048 // SO_RCVBUF: the kernel doubles it, room for a few events
	recvSize  = 128  // bytes per message buffer (a message is exitMsgLen)

	probeName = "atopacctd-exit-probe" // argv[0] of the child whose exit checks the subscription
	probeWait = time.Second
)

// encodeListen builds the message that subscribes to (or leaves) the proc
// connector's multicast group.
func encodeListen(op uint32) [sizeofListen]byte {
	var b [sizeofListen]byte
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], sizeofListen)          // nlmsg_len
	ne.PutUint16(b[4:], unix.NLMSG_DONE)       // nlmsg_type
	ne.PutUint32(b[offCnIdx:], cnIdxProc)      // id.idx
	ne.PutUint32(b[offCnVal:], cnValProc)      // id.val
	ne.PutUint16(b[offCnLen:], 4)              // len
	ne.PutUint32(b[offCnIdx+sizeofCnMsg:], op) // data: enum proc_cn_mcast_op
	return b
}

// parseExit decodes a proc connector exit event, checking every length first.
func parseExit(b []byte) (pid, tgid uint32, ok bool) {
	ne := binary.NativeEndian
	if len(b) < exitMsgLen {
		return 0, 0, false
	}
	if l := ne.Uint32(b[0:]); l < exitMsgLen || int(l) > len(b) {
		return 0, 0, false
	}
	if ne.Uint32(b[offCnIdx:]) != cnIdxProc || ne.Uint32(b[offCnVal:]) != cnValProc ||
		ne.Uint16(b[offCnLen:]) < sizeofProcEvent || ne.Uint32(b[offWhat:]) != procEventExit {
		return 0, 0, false
	}
	return ne.Uint32(b[offExitPid:]), ne.Uint32(b[offExitTid:]), true
}

// wire32 is how a classic BPF word load (network byte order) sees a field
// that the kernel wrote in host byte order.
func wire32(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

// exitFilter is a classic BPF socket filter that keeps only exit events of
// whole processes (pid == tgid): thread exits write no accounting record.
func exitFilter() []unix.SockFilter {
	const (
		ldLen  = unix.BPF_LD | unix.BPF_W | unix.BPF_LEN
		ldAbs  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jgeK   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jeqX   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_X
		tax    = unix.BPF_MISC | unix.BPF_TAX
		retK   = unix.BPF_RET | unix.BPF_K
		accept = 0xffffffff
	)
	return []unix.SockFilter{
		{Code: ldLen},
		{Code: jgeK, K: uint32(exitMsgLen), Jf: 11},
		{Code: ldAbs, K: uint32(offCnIdx)},
		{Code: jeqK, K: wire32(cnIdxProc), Jf: 9},
		{Code: ldAbs, K: uint32(offCnVal)},
		{Code: jeqK, K: wire32(cnValProc), Jf: 7},
		{Code: ldAbs, K: uint32(offWhat)},
		{Code: jeqK, K: wire32(procEventExit), Jf: 5},
		{Code: ldAbs, K: uint32(offExitTid)},
		{Code: tax},
		{Code: ldAbs, K: uint32(offExitPid)},
		{Code: jeqX, Jf: 1},
		{Code: retK, K: accept},
		{Code: retK, K: 0},
	}
}

// procConn is a proc connector subscription with preallocated receive buffers.
type procConn struct {
	fd    int
	hdrs  [recvBatch]unix.Mmsghdr
	iovs  [recvBatch]unix.Iovec
	bufs  [recvBatch][recvSize]byte
	watch uint32 // a pid whose exit drain looks for (startup check)
	seen  bool   // watch exited

	recent [8]uint32 // the pids of the last exit events (groupEnded)
	exits  uint64    // exit events so far, an index into recent
}

// openProcConnector subscribes to exit events. Unavailable in a new network
// namespace (ECONNREFUSED) or without CAP_NET_ADMIN on older kernels (EPERM).
func openProcConnector() (*procConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	c := &procConn{fd: fd}
	prog := exitFilter()
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		c.close()
		return nil, fmt.Errorf("attach exit filter: %w", os.NewSyscallError("setsockopt", err))
	}
	// A small receive buffer on purpose: an event only says "read the
	// file", and one queued event says it as well as a thousand. When the
	// queue is full the kernel drops further events in the exiting process's
	// context (the socket then reports ENOBUFS once), so a storm costs the
	// daemon a few messages per turn instead of one per exit.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		c.close()
		return nil, os.NewSyscallError("bind", err)
	}
	if err := c.send(procCnMcastListen); err != nil {
		c.close()
		return nil, err
	}
	c.setBuffers()
	return c, nil
}

// setBuffers points each message header at its own preallocated buffer.
func (c *procConn) setBuffers() {
	for i := range c.hdrs {
		c.iovs[i].Base = &c.bufs[i][0]
		c.iovs[i].SetLen(recvSize)
		c.hdrs[i].Hdr.Iov = &c.iovs[i]
		c.hdrs[i].Hdr.SetIovlen(1)
	}
}

func (c *procConn) send(op uint32) error {
	msg := encodeListen(op)
	if err := unix.Sendto(c.fd, msg[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	return nil
}

// drain reads every pending message, recvBatch per system call. overrun
// means the socket buffer overflowed (ENOBUFS): events were lost, so the
// caller must read the source file whatever the count says.
func (c *procConn) drain() (events int, overrun bool, err error) {
	for {
		// Raw, as it never waits (MSG_DONTWAIT): see rawRead in sys.go.
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&c.hdrs[0])),
			recvBatch, unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
		case unix.EAGAIN:
			return events, overrun, nil
		case unix.ENOBUFS:
			overrun = true
			continue
		case unix.EINTR:
			continue
		default:
			return events, overrun, os.NewSyscallError("recvmmsg", errno)
		}
		for i := 0; i < int(n); i++ {
			pid, _, ok := parseExit(c.bufs[i][:c.hdrs[i].Len])
			if ok {
				events++
				c.seen = c.seen || pid == c.watch
				c.recent[c.exits%uint64(len(c.recent))] = pid
				c.exits++
			}
		}
		if int(n) < recvBatch {
			return events, overrun, nil
		}
	}
}

// groupEnded reports whether one of the last n exit events (at most
// len(recent)) ended its thread group. The event of a group's leader comes
// when the leader thread exits, also while other threads of its group live
// on (any user can make such exits by the thousand), and only a group's end
// brings a record. A group has ended when its pid is gone (reaped) or its
// pidfd is readable (a zombie with no thread left). A pid reused since
// looks like a live group; an error (pidfd_open is Linux 5.3) like an end,
// as the events alone would.
func (c *procConn) groupEnded(n uint64) bool {
	for i := uint64(0); i < min(n, c.exits, uint64(len(c.recent))); i++ {
		fd, err := unix.PidfdOpen(int(c.recent[(c.exits-1-i)%uint64(len(c.recent))]), 0)
		if err != nil {
			return true
		}
		fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		var now unix.Timespec
		ready, _ := unix.Ppoll(fds[:], &now, nil)
		unix.Close(fd)
		if ready > 0 {
			return true
		}
	}
	return false
}

// errNoEvents reports a subscription the kernel accepted but serves nothing
// through (seen inside a new pid namespace).
var errNoEvents = errors.New("the proc connector delivers no exit events")

// probe starts a child that exits at once and waits for its exit event: a
// subscription can be accepted and still deliver nothing (new pid namespace).
func (c *procConn) probe() error {
	p, err := os.StartProcess("/proc/self/exe", []string{probeName}, &os.ProcAttr{})
	if err != nil {
		return fmt.Errorf("start exit probe: %w", err)
	}
	defer p.Wait()
	c.watch, c.seen = uint32(p.Pid), false
	deadline := time.Now().Add(probeWait)
	for !c.seen {
		left := time.Until(deadline)
		if left <= 0 {
			return errNoEvents
		}
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return os.NewSyscallError("poll", err)
		}
		if _, _, err := c.drain(); err != nil {
			return err
		}
	}
	return nil
}

// close leaves the multicast group (the kernel counts listeners) and closes.
func (c *procConn) close() {
	if c == nil || c.fd < 0 {
		return
	}
	c.send(procCnMcastIgnore)
	unix.Close(c.fd)
	c.fd = -1
}
