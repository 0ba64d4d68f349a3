// The kernel's accounting file: switching accounting on, off and to a fresh
// file, and the record format.
// Speaks acct(2), acct(5), include/uapi/linux/acct.h and the "acct" entry of
// Documentation/admin-guide/sysctl/kernel.rst.

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	sourceName = "pacct_source"      // TOP/pacct_source, mode 0600
	sourceNext = "pacct_source.next" // the file the kernel is being switched to

	readRecords = 4096 // records per read of a source file
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

// source is the pair of files the kernel appends records to, read by the
// daemon alone: TOP/pacct_source, which the kernel writes, and
// TOP/pacct_source.next, empty, which it writes after the next rotation.
// Two fixed files, switched in turn, because acct(2) opens its file on a
// private clone of the mount, which Landlock cannot see beneath the top
// directory: only a rule on the file itself, made before the sandbox, lets
// the sandboxed daemon switch to it.
type source struct {
	top    int    // top directory
	fds    [2]int // both files, open read-write; fds[cur] is being written
	cur    int
	off    int64 // bytes consumed from fds[cur]
	format recordFormat
	self   string     // identity of the daemon's own records
	early  int64      // bytes of other records in pacct_source.next at switchOn
	seen   int64      // the end of the records read so far from fds[cur]
	on     bool       // accounting is the daemon's to switch off: it switched it on, or took it over (--restart)
	limits acctLimits // the kernel's suspend and resume levels for the files' file system
	buf    []byte     // what reads fill: readRecords records, made once the format is known

	switching bool // the kernel writes the other file; fds[cur] is still being read

	name, nextName []byte    // NUL-terminated names for the *at calls
	paths          [2][]byte // "/proc/self/fd/N": acct(2) takes a path
}

func newSource(top int) *source {
	return &source{top: top, fds: [2]int{-1, -1}, name: cstr(sourceName), nextName: cstr(sourceNext)}
}

// create makes both files empty (0600), replacing any left behind.
func (s *source) create() error {
	for i, name := range [][]byte{s.name, s.nextName} {
		if err := unlinkat(s.top, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s: %w", cname(name), os.NewSyscallError("unlinkat", err))
		}
		fd, err := openat(s.top, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", cname(name), os.NewSyscallError("openat", err))
		}
		s.fds[i] = fd
		s.paths[i] = cstr("/proc/self/fd/" + strconv.Itoa(fd))
	}
	s.limits = readAcctLimits()
	return nil
}

// switchOn switches accounting on into pacct_source and learns the record
// format without waiting for any process: the kernel writes a record for the
// caller into the old file whenever acct(2) switches files, so the daemon
// switches to pacct_source.next first, then to pacct_source, and reads its
// own record, the last one in pacct_source.next. The records before it are
// of processes that exited between the two switches: takeEarly copies them.
func (s *source) switchOn() error {
	if err := acct(s.paths[1]); err != nil {
		return fmt.Errorf("switch accounting on (%s): %w", sourceNext, os.NewSyscallError("acct", err))
	}
	s.on = true
	if err := acct(s.paths[0]); err != nil {
		return fmt.Errorf("switch accounting on (%s): %w", sourceName, os.NewSyscallError("acct", err))
	}
	var st unix.Stat_t
	if err := unix.Fstat(s.fds[1], &st); err != nil {
		return fmt.Errorf("read %s: %w", sourceNext, os.NewSyscallError("fstat", err))
	}
	if st.Size == 0 {
		return errors.New("the kernel wrote no accounting record (file system below the suspend level of /proc/sys/kernel/acct?)")
	}
	// Both formats have one size (checked in abi.go), so the daemon's
	// record is the last sizeofAcctV3 bytes whatever the format.
	var rec [sizeofAcctV3]byte
	s.early = st.Size - sizeofAcctV3
	if s.early < 0 || s.early%sizeofAcctV3 != 0 {
		return fmt.Errorf("%w: %d bytes, not whole records of %d", errFormat, st.Size, sizeofAcctV3)
	}
	if n, err := unix.Pread(s.fds[1], rec[:], s.early); n != len(rec) {
		return fmt.Errorf("read %s: %w", sourceNext, readError(err))
	}
	f, err := parseFormat(rec[:])
	if err != nil {
		return err
	}
	s.format, s.self = f, f.identity(rec[:])
	s.buf = make([]byte, readRecords*f.size)
	return nil
}

// readError is pread's error, or io.ErrUnexpectedEOF when it read short
// without one (the file shrank under the daemon).
func readError(err error) error {
	if err != nil {
		return os.NewSyscallError("pread", err)
	}
	return io.ErrUnexpectedEOF
}

// takeEarly passes the records of processes that exited between switchOn's
// two switches to f, a buffer at a time, then empties pacct_source.next.
func (s *source) takeEarly(f func([]byte) error) error {
	buf := s.buf
	for off := int64(0); off < s.early; {
		n, err := unix.Pread(s.fds[1], buf[:min(int64(len(buf)), s.early-off)], off)
		if n <= 0 {
			return fmt.Errorf("read %s: %w", sourceNext, readError(err))
		}
		n -= n % s.format.size
		if err := f(buf[:n]); err != nil {
			return err
		}
		off += int64(n)
	}
	s.early = 0
	if err := unix.Ftruncate(s.fds[1], 0); err != nil {
		return fmt.Errorf("empty %s: %w", sourceNext, os.NewSyscallError("ftruncate", err))
	}
	return nil
}

// reclaim switches accounting back to the file being written, after another
// program switched it elsewhere.
func (s *source) reclaim() error {
	if err := acct(s.paths[s.cur]); err != nil {
		return fmt.Errorf("take process accounting back (%s): %w", sourceName, os.NewSyscallError("acct", err))
	}
	return nil
}

// inherit takes accounting on into these files as the daemon's own: a
// daemon taking over (--restart) left it on.
func (s *source) inherit() { s.on = true }

// leaveOn leaves accounting on at switchOff, for the daemon taking over.
func (s *source) leaveOn() { s.on = false }

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

// read reads whole records, up to limit bytes, from the file being written
// into the source's buffer, from where the last read ended (the
// descriptor's file position: read(2) needs no 64-bit offset split across
// registers on 32-bit architectures, as pread64(2) does). It returns the
// records read (none at the end) and whether they filled the buffer.
func (s *source) read(limit int64) (recs []byte, full bool, err error) {
	fd := s.fds[s.cur]
	buf := s.buf[:min(int64(len(s.buf)), limit)]
	n, err := rawRead(fd, buf)
	if err != nil {
		return nil, false, os.NewSyscallError("read "+sourceName, err)
	}
	if part := n % s.format.size; part != 0 {
		// The kernel was writing the last record: read it again next time.
		if _, err := unix.Seek(fd, -int64(part), io.SeekCurrent); err != nil {
			return nil, false, os.NewSyscallError("lseek "+sourceName, err)
		}
		n -= part
	}
	s.off += int64(n)
	return buf[:n], n == len(s.buf), nil
}

// unread gives back the last n bytes read: the next read returns them again.
func (s *source) unread(n int) error {
	if _, err := unix.Seek(s.fds[s.cur], -int64(n), io.SeekCurrent); err != nil {
		return os.NewSyscallError("lseek "+sourceName, err)
	}
	s.off -= int64(n)
	return nil
}

// fresh reports whether the last read returned records never read before
// (the same records come again after unread), and remembers where they end.
func (s *source) fresh() bool {
	if s.off <= s.seen {
		return false
	}
	s.seen = s.off
	return true
}

// seenAll counts every record in fds[cur] as read before (held back: its
// arrival was noted then), so that reading it later is not news.
func (s *source) seenAll() {
	var st unix.Stat_t
	if unix.Fstat(s.fds[s.cur], &st) == nil {
		s.seen = max(s.seen, st.Size)
	}
}

// backlog is the bytes the kernel wrote that the daemon has not consumed:
// the rest of fds[cur], and during a switch the whole other file.
func (s *source) backlog() int64 {
	var st unix.Stat_t
	n := int64(0)
	if unix.Fstat(s.fds[s.cur], &st) == nil {
		n = st.Size - s.off
	}
	if s.switching && unix.Fstat(s.fds[1-s.cur], &st) == nil {
		n += st.Size
	}
	return n
}

// beginSwitch switches the kernel to the other, empty file. When acct(2)
// returns, the kernel has closed the old file: what it holds now is all it
// will ever hold, ending with a record about the daemon.
func (s *source) beginSwitch() error {
	if err := acct(s.paths[1-s.cur]); err != nil {
		return fmt.Errorf("switch accounting to %s: %w", sourceNext, os.NewSyscallError("acct", err))
	}
	s.switching = true
	return nil
}

// finishSwitch, once the old file is drained, empties it, reads from the
// new one from now on and swaps the two names (so TOP/pacct_source always
// names the file being written). An error wrapping ENOENT means a name was
// removed: the files stay open and in use, only the names are gone.
func (s *source) finishSwitch() error {
	old := s.fds[s.cur]
	s.cur, s.off, s.seen, s.switching = 1-s.cur, 0, 0, false
	if _, err := unix.Seek(s.fds[s.cur], 0, io.SeekStart); err != nil { // emptied when it was the old one
		return fmt.Errorf("rewind %s: %w", sourceNext, os.NewSyscallError("lseek", err))
	}
	if err := unix.Ftruncate(old, 0); err != nil {
		// Named pacct_source until the exchange below.
		return fmt.Errorf("empty %s: %w", sourceName, os.NewSyscallError("ftruncate", err))
	}
	if err := renameat2(s.top, s.nextName, s.top, s.name, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("exchange %s and %s: %w", sourceName, sourceNext, os.NewSyscallError("renameat2", err))
	}
	return nil
}

// size returns the bytes in the file being written, for the status.
func (s *source) size() int64 {
	var st unix.Stat_t
	if unix.Fstat(s.fds[s.cur], &st) != nil {
		return 0
	}
	return st.Size
}

// isSelf reports whether rec is about the daemon itself: the record acct(2)
// writes into the old file of a switch, of the switching process.
func (s *source) isSelf(rec []byte) bool { return s.format.isSelf(rec, s.self) }

// others counts the records of recs that are not about the daemon itself.
func (s *source) others(recs []byte) int {
	n, size := 0, s.format.size
	for i := 0; i+size <= len(recs); i += size {
		if !s.isSelf(recs[i : i+size]) {
			n++
		}
	}
	return n
}

// remove switches accounting off and deletes the source files.
func (s *source) remove() error {
	err := s.switchOff()
	if s.fds[0] < 0 {
		return err // create never ran: the names are not ours
	}
	s.close()
	unlinkat(s.top, s.name, 0)
	unlinkat(s.top, s.nextName, 0)
	return err
}

// close closes the source files, leaving them (and accounting) as they are.
func (s *source) close() { closeAll(s.fds[:]) }
