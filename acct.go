// The kernel's accounting file: switching accounting on, off and to a fresh
// file, and the record format.
// Speaks acct(2), acct(5), include/uapi/linux/acct.h and the "acct" entry of
// Documentation/admin-guide/sysctl/kernel.rst.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	sourceName = "pacct_source"      // TOP/pacct_source, mode 0600
	sourceNext = "pacct_source.next" // the file the kernel is being switched to

	// #define ACCT_COMM 16
	acctComm = 16
	// #define ACCT_BYTEORDER 0x80 (set by big-endian kernels)
	acctByteorder = 0x80

	sizeofAcct   = 64 // struct acct, ac_version 2
	sizeofAcctV3 = 64 // struct acct_v3, ac_version 3

	offVersion  = 1  // ac_version, both layouts
	offV2Btime  = 8  // struct acct.ac_btime
	offV2Comm   = 36 // struct acct.ac_comm[ACCT_COMM+1]
	offV3Pid    = 16 // struct acct_v3.ac_pid
	offV3Btime  = 24 // struct acct_v3.ac_btime
	offV3Comm   = 48 // struct acct_v3.ac_comm[ACCT_COMM]
	readRecords = 4096
)

// errFormat marks a record version that neither we nor atop can read.
var errFormat = errors.New("unsupported accounting record")

// recordFormat is what the version byte of the first record tells.
type recordFormat struct {
	version int // 2 or 3
	size    int // bytes per record
	order   binary.ByteOrder
}

// parseFormat reads ac_version: low nibble 3 = struct acct_v3, 2 = struct
// acct; bit 0x80 = written by a big-endian kernel.
func parseFormat(rec []byte) (recordFormat, error) {
	if len(rec) <= offVersion {
		return recordFormat{}, fmt.Errorf("%w: %d bytes", errFormat, len(rec))
	}
	v := rec[offVersion]
	f := recordFormat{version: int(v &^ acctByteorder), order: binary.LittleEndian}
	if v&acctByteorder != 0 {
		f.order = binary.BigEndian
	}
	switch f.version {
	case 3:
		f.size = sizeofAcctV3
	case 2:
		f.size = sizeofAcct
	default:
		return recordFormat{}, fmt.Errorf("%w: version byte %#x", errFormat, v)
	}
	return f, nil
}

// identity picks what tells the daemon's own records apart: the pid in
// version 3, the start time and command name in version 2 (which has no pid).
func (f recordFormat) identity(rec []byte) string {
	if f.version == 3 {
		return string(rec[offV3Pid : offV3Pid+4])
	}
	return string(rec[offV2Btime:offV2Btime+4]) + string(rec[offV2Comm:offV2Comm+acctComm])
}

// isSelf reports whether rec has identity id; it does not allocate.
func (f recordFormat) isSelf(rec []byte, id string) bool {
	if f.version == 3 {
		return string(rec[offV3Pid:offV3Pid+4]) == id
	}
	return string(rec[offV2Btime:offV2Btime+4]) == id[:4] && string(rec[offV2Comm:offV2Comm+acctComm]) == id[4:]
}

// pid returns ac_pid of a version 3 record, 0 for version 2.
func (f recordFormat) pid(rec []byte) uint32 {
	if f.version != 3 {
		return 0
	}
	return f.order.Uint32(rec[offV3Pid:])
}

// comm returns the command name of a record.
func (f recordFormat) comm(rec []byte) string {
	off := offV2Comm
	if f.version == 3 {
		off = offV3Comm
	}
	c := rec[off : off+acctComm]
	if i := bytes.IndexByte(c, 0); i >= 0 {
		c = c[:i]
	}
	return string(c)
}

// acct wraps acct(2); a nil path switches accounting off.
func acct(path []byte) error {
	var p unsafe.Pointer
	if path != nil {
		p = unsafe.Pointer(&path[0])
	}
	_, _, errno := unix.Syscall(unix.SYS_ACCT, uintptr(p), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// source is the file the kernel appends records to, read by the daemon alone.
type source struct {
	top    int   // top directory
	fd     int   // the current source file, open for reading
	off    int64 // bytes consumed from fd
	next   int   // the next source file while switching, else -1
	format recordFormat
	self   string // identity of the daemon's own records

	name, nextName []byte // NUL-terminated names for the *at calls
	path, nextPath []byte // "/proc/self/fd/TOP/name": acct(2) has no *at form
	on             bool   // the daemon switched accounting on
}

func newSource(top int) *source {
	dir := "/proc/self/fd/" + strconv.Itoa(top) + "/"
	return &source{
		top: top, fd: -1, next: -1,
		name: cstr(sourceName), nextName: cstr(sourceNext),
		path: cstr(dir + sourceName), nextPath: cstr(dir + sourceNext),
	}
}

// create makes an empty TOP/pacct_source (0600), replacing one left behind.
func (s *source) create() error {
	unlinkat(s.top, s.nextName, 0)
	fd, err := s.createFile(s.name)
	if err != nil {
		return err
	}
	s.fd, s.off = fd, 0
	return nil
}

func (s *source) createFile(name []byte) (int, error) {
	if err := unlinkat(s.top, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return -1, fmt.Errorf("remove %s: %w", cname(name), os.NewSyscallError("unlinkat", err))
	}
	fd, err := openat(s.top, name, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return -1, fmt.Errorf("create %s: %w", cname(name), os.NewSyscallError("openat", err))
	}
	return fd, nil
}

// switchOn switches accounting on into the source file and learns the record
// format without waiting for any process: the kernel writes a record for the
// caller into the old file whenever acct(2) switches files, so the daemon
// switches to a probe file first and then to the source, and reads its own
// record from the probe.
func (s *source) switchOn() error {
	probe, err := s.createFile(s.nextName)
	if err != nil {
		return err
	}
	defer unix.Close(probe)
	defer unlinkat(s.top, s.nextName, 0)
	if err := acct(s.nextPath); err != nil {
		return fmt.Errorf("switch accounting on (%s): %w", cname(s.nextPath), os.NewSyscallError("acct", err))
	}
	s.on = true
	if err := acct(s.path); err != nil {
		return fmt.Errorf("switch accounting on (%s): %w", cname(s.path), os.NewSyscallError("acct", err))
	}
	var rec [sizeofAcctV3]byte
	n, err := unix.Pread(probe, rec[:], 0)
	if err != nil {
		return fmt.Errorf("read %s: %w", sourceNext, os.NewSyscallError("pread", err))
	}
	if n == 0 {
		return errors.New("the kernel wrote no accounting record (file system below the suspend level of /proc/sys/kernel/acct?)")
	}
	f, err := parseFormat(rec[:n])
	if err != nil {
		return err
	}
	if n < f.size {
		return fmt.Errorf("%w: short record of %d bytes", errFormat, n)
	}
	s.format, s.self = f, f.identity(rec[:])
	return nil
}

// switchOff switches accounting off, if the daemon switched it on.
func (s *source) switchOff() error {
	if !s.on {
		return nil
	}
	s.on = false
	if err := acct(nil); err != nil {
		return os.NewSyscallError("acct off", err)
	}
	return nil
}

// read fills buf from the source file with whole records, from where the last
// read ended; it returns the records read (nil at the end of the file).
func (s *source) read(buf []byte) ([]byte, error) {
	n, err := unix.Pread(s.fd, buf, s.off)
	if err != nil {
		return nil, os.NewSyscallError("pread "+sourceName, err)
	}
	n -= n % s.format.size
	s.off += int64(n)
	return buf[:n], nil
}

// beginSwitch makes a fresh next source file and switches the kernel to it.
// When acct(2) returns, the kernel has closed the old file: what it holds
// now is all it will ever hold, ending with a record about the daemon.
func (s *source) beginSwitch() error {
	fd, err := s.createFile(s.nextName)
	if err != nil {
		return err
	}
	if err := acct(s.nextPath); err != nil {
		unix.Close(fd)
		unlinkat(s.top, s.nextName, 0)
		return fmt.Errorf("switch accounting to %s: %w", sourceNext, os.NewSyscallError("acct", err))
	}
	s.next = fd
	return nil
}

// finishSwitch, once the old file is drained, renames the next file over it
// (so TOP/pacct_source exists at every moment) and reads from the new one.
func (s *source) finishSwitch() error {
	if err := renameat(s.top, s.nextName, s.top, s.name); err != nil {
		return fmt.Errorf("rename %s to %s: %w", sourceNext, sourceName, os.NewSyscallError("renameat2", err))
	}
	unix.Close(s.fd)
	s.fd, s.next, s.off = s.next, -1, 0
	return nil
}

// dropSelf removes, in place, the records about the daemon itself: those the
// kernel writes into the old file when the daemon switches files.
func (s *source) dropSelf(recs []byte) []byte {
	size := s.format.size
	out := recs[:0]
	for i := 0; i+size <= len(recs); i += size {
		if !s.format.isSelf(recs[i:i+size], s.self) {
			out = append(out, recs[i:i+size]...)
		}
	}
	return out
}

// remove switches accounting off and deletes the source files.
func (s *source) remove() error {
	err := s.switchOff()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
	if s.next >= 0 {
		unix.Close(s.next)
		s.next = -1
	}
	unlinkat(s.top, s.nextName, 0)
	unlinkat(s.top, s.name, 0)
	return err
}
