// The kernel structures the daemon decodes that x/sys lacks, with exact-width
// fields in header order: the accounting records (include/uapi/linux/acct.h)
// and the proc connector's exit event (include/uapi/linux/connector.h,
// include/uapi/linux/cn_proc.h). Offsets come from the structs; their sizes
// are the kernel's, or this does not compile. Records and netlink messages
// are decoded field by field with encoding/binary, never by casting.

package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// acctV3 is struct acct_v3 (ac_version 3).
type acctV3 struct {
	_       uint8          // ac_flag
	version uint8          // ac_version
	_       uint16         // ac_tty
	_       uint32         // ac_exitcode
	_       uint32         // ac_uid
	_       uint32         // ac_gid
	pid     uint32         // ac_pid
	ppid    uint32         // ac_ppid
	btime   uint32         // ac_btime
	_       uint32         // ac_etime (a float to user space)
	_       uint16         // ac_utime, comp_t like those below
	_       uint16         // ac_stime
	_       uint16         // ac_mem
	_       uint16         // ac_io
	_       uint16         // ac_rw
	_       uint16         // ac_minflt
	_       uint16         // ac_majflt
	_       uint16         // ac_swaps
	comm    [acctComm]byte // ac_comm
}

// acctV2 is struct acct (ac_version 2).
type acctV2 struct {
	_     uint8              // ac_flag
	_     uint8              // ac_version
	_     uint16             // ac_uid16
	_     uint16             // ac_gid16
	_     uint16             // ac_tty
	btime uint32             // ac_btime
	_     uint16             // ac_utime, comp_t like those below
	_     uint16             // ac_stime
	_     uint16             // ac_etime
	_     uint16             // ac_mem
	_     uint16             // ac_io
	_     uint16             // ac_rw
	_     uint16             // ac_minflt
	_     uint16             // ac_majflt
	_     uint16             // ac_swaps
	_     uint16             // ac_ahz
	_     uint32             // ac_exitcode
	comm  [acctComm + 1]byte // ac_comm
	_     uint8              // ac_etime_hi
	_     uint16             // ac_etime_lo
	uid   uint32             // ac_uid
	_     uint32             // ac_gid
}

const (
	// #define ACCT_COMM 16
	acctComm = 16
	// #define ACCT_BYTEORDER 0x80 (set by big-endian kernels)
	acctByteorder = 0x80

	sizeofAcct   = 64 // sizeof(struct acct)
	sizeofAcctV3 = 64 // sizeof(struct acct_v3)

	offVersion = int(unsafe.Offsetof(acctV3{}.version)) // ac_version, both layouts
	offV2Btime = int(unsafe.Offsetof(acctV2{}.btime))
	offV2Comm  = int(unsafe.Offsetof(acctV2{}.comm))
	offV3Pid   = int(unsafe.Offsetof(acctV3{}.pid))
	offV3Ppid  = int(unsafe.Offsetof(acctV3{}.ppid))
	offV3Btime = int(unsafe.Offsetof(acctV3{}.btime))
	offV3Comm  = int(unsafe.Offsetof(acctV3{}.comm))
)

// cnMsg is struct cn_msg without its data.
type cnMsg struct {
	idx uint32 // id.idx (struct cb_id)
	val uint32 // id.val
	_   uint32
	_   uint32
	len uint16 // of the data
	_   uint16
}

// procEventExitMsg is struct proc_event with the exit member of its union
// (event_data.exit), the one the daemon reads.
type procEventExitMsg struct {
	what        uint32 // enum what
	_           uint32
	_           uint64
	processPid  uint32 // exit.process_pid
	processTgid uint32 // exit.process_tgid
	_           uint32
	_           uint32
	_           uint32
	_           uint32
}

const (
	sizeofCnMsg     = 20 // sizeof(struct cn_msg)
	sizeofProcEvent = 40 // sizeof(struct proc_event): what, cpu, timestamp_ns, a 24-byte union

	// Offsets from the start of a netlink message carrying a proc_event.
	offCnIdx   = unix.SizeofNlMsghdr + int(unsafe.Offsetof(cnMsg{}.idx))
	offCnVal   = unix.SizeofNlMsghdr + int(unsafe.Offsetof(cnMsg{}.val))
	offCnLen   = unix.SizeofNlMsghdr + int(unsafe.Offsetof(cnMsg{}.len))
	offEvent   = unix.SizeofNlMsghdr + sizeofCnMsg
	offWhat    = offEvent + int(unsafe.Offsetof(procEventExitMsg{}.what))
	offExitPid = offEvent + int(unsafe.Offsetof(procEventExitMsg{}.processPid))
	offExitTid = offEvent + int(unsafe.Offsetof(procEventExitMsg{}.processTgid))
	exitMsgLen = offEvent + sizeofProcEvent // 76 bytes

	sizeofListen = unix.SizeofNlMsghdr + sizeofCnMsg + 4 // a cn_msg carrying one op
)

// The sizes are the kernel's (an index out of range does not compile), and
// both record formats have one size, which switchOn relies on to find its
// own record before it knows the format.
var (
	_ = [1]struct{}{}[unsafe.Sizeof(acctV3{})-sizeofAcctV3]
	_ = [1]struct{}{}[unsafe.Sizeof(acctV2{})-sizeofAcct]
	_ = [1]struct{}{}[sizeofAcctV3-sizeofAcct]
	_ = [1]struct{}{}[unsafe.Sizeof(cnMsg{})-sizeofCnMsg]
	_ = [1]struct{}{}[unsafe.Sizeof(procEventExitMsg{})-sizeofProcEvent]
)
