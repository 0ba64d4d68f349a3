// Shadow files: the size-limited copies of the accounting records that
// clients read, the "current" file naming the newest, and their repair when
// someone removed them (their collection is in clients.go).
// Speaks openat(2), renameat2(2), unlinkat(2) and the file
// contract in docs/PROTOCOL.md ("Files").

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	shadowDir   = "pacct_shadow.d"
	staleDir    = shadowDir + ".stale-" // a directory left by a crashed daemon, moved aside
	currentName = "current"
	currentTmp  = "current.tmp"
	pafSuffix   = ".paf"
	seqDigits   = 10

	// struct linux_dirent64 as getdents64(2) returns it
	direntReclen = int(unsafe.Offsetof(unix.Dirent{}.Reclen))
	direntName   = int(unsafe.Offsetof(unix.Dirent{}.Name))
)

var errDiskFull = errors.New("no space left for shadow files")

// formatName writes "%010d.paf" and a NUL into b (len(b) >= 15).
func formatName(b []byte, seq int64) []byte {
	for i := seqDigits - 1; i >= 0; i-- {
		b[i] = byte('0' + seq%10)
		seq /= 10
	}
	copy(b[seqDigits:], pafSuffix+"\x00")
	return b[:seqDigits+len(pafSuffix)+1]
}

// parseName returns the sequence number of a shadow file name.
func parseName[T string | []byte](name T) (int64, bool) {
	if len(name) != seqDigits+len(pafSuffix) || string(name[seqDigits:]) != pafSuffix {
		return 0, false
	}
	var seq int64
	for _, c := range []byte(name[:seqDigits]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		seq = seq*10 + int64(c-'0')
	}
	return seq, true
}

// formatCurrent appends the content of "current": "<seq>/<maxrecords>".
func formatCurrent(b []byte, seq, max int64) []byte {
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, '/')
	return strconv.AppendInt(b, max, 10)
}

// parseCurrent reads "current" as clients do with fscanf("%ld/%ld"): blanks
// before each number are skipped and trailing text is ignored.
func parseCurrent(b []byte) (seq, max int64, ok bool) {
	seq, b, ok = scanLong(b)
	if !ok || len(b) == 0 || b[0] != '/' {
		return 0, 0, false
	}
	if max, _, ok = scanLong(b[1:]); !ok {
		return 0, 0, false
	}
	return seq, max, true
}

// scanLong is fscanf's %ld: optional blanks, an optional sign, digits.
func scanLong(b []byte) (int64, []byte, bool) {
	for len(b) > 0 && (b[0] == ' ' || b[0] >= '\t' && b[0] <= '\r') {
		b = b[1:]
	}
	i := 0
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == start {
		return 0, b, false
	}
	v, err := strconv.ParseInt(string(b[:i]), 10, 64)
	return v, b[i:], err == nil
}

// shadow owns the shadow directory and the file being written.
type shadow struct {
	top     int   // top directory
	dir     int   // TOP/pacct_shadow.d
	max     int64 // records per file
	recSize int
	limit   int64 // bytes the shadow files may take even while read-locked (collect)

	seq    int64  // sequence number of the file being written
	fd     int    // that file, open for writing
	n      int64  // records in it
	copied uint64 // records written since start
	oldest int64  // sequence number of the oldest file kept

	adopted  bool   // create took over a previous daemon's directory
	repaired string // what start had to recreate, for repair to report
	stale    bool   // a directory moved aside may be left to remove

	seqs   []int64    // list's result, reused
	dirBuf [8192]byte // list's getdents64 buffer

	dirName, curName, curTmp, dot []byte
	name                          [16]byte // "NNNNNNNNNN.paf\0"
	content                       [48]byte // content of current
}

// shadowMaxPart is the part of the top directory's file system the shadow
// files may take by default (--shadow-max): far above what a client reading
// at atop's longest usual interval (10 minutes) leaves behind at a few
// hundred exits a second, yet a bound that one local user holding a read
// lock on the oldest file cannot push /run past; the disk guard (5 % free)
// stays below it for every client.
const shadowMaxPart = 10

const noLimit = 1 << 62

// setLimit sets the bytes the shadow files may take (collect); 0 means
// 1/shadowMaxPart of the top directory's file system.
func (s *shadow) setLimit(bytes int64) {
	var st unix.Statfs_t
	if bytes == 0 && unix.Fstatfs(s.top, &st) == nil {
		bytes = int64(st.Blocks) * int64(st.Frsize) / shadowMaxPart
	}
	if bytes == 0 {
		bytes = noLimit // the file system does not say: none but the disk guard
	}
	s.limit = bytes
}

// setRecordSize sets the size of the records the kernel writes, known once
// accounting is on.
func (s *shadow) setRecordSize(n int) { s.recSize = n }

func newShadow(top int, max int64) *shadow {
	return &shadow{top: top, dir: -1, fd: -1, max: max, limit: noLimit,
		dirName: cstr(shadowDir), curName: cstr(currentName), curTmp: cstr(currentTmp), dot: cstr(".")}
}

// create adopts the shadow directory a previous daemon left (adopt), or
// makes a fresh one with an empty first file. A directory that is not
// provably a daemon's is moved aside first and removed: its files may still
// be open in clients, and unlinking them is what tells those clients (link
// count 0) to re-attach. It returns why a directory found was not adopted
// ("" when none was found, or it was adopted: adopted says which).
func (s *shadow) create() (notAdopted string, err error) {
	err = unix.Mkdirat(s.top, shadowDir, 0o755)
	if errors.Is(err, unix.EEXIST) {
		if notAdopted = s.adopt(); notAdopted == "" {
			return "", nil
		}
		stale := cstr(staleDir + strconv.Itoa(os.Getpid()))
		removeTree(s.top, cname(stale))
		if err := renameat(s.top, s.dirName, s.top, stale); err != nil {
			return notAdopted, fmt.Errorf("move aside %s: %w", shadowDir, os.NewSyscallError("renameat2", err))
		}
		err = unix.Mkdirat(s.top, shadowDir, 0o755)
	}
	if err != nil {
		return notAdopted, fmt.Errorf("create %s: %w", shadowDir, os.NewSyscallError("mkdirat", err))
	}
	s.stale = true
	s.removeStale()
	return notAdopted, s.open()
}

// open opens the shadow directory and starts again at file 0.
func (s *shadow) open() error {
	fd, err := openat(s.top, s.dirName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", shadowDir, os.NewSyscallError("openat", err))
	}
	if s.dir >= 0 {
		unix.Close(s.dir)
	}
	s.dir, s.oldest = fd, 0
	return s.start(0)
}

// removeStale removes every directory moved aside by create, now or by an
// earlier daemon; what cannot be removed now is retried at the next collect.
func (s *shadow) removeStale() error {
	if !s.stale {
		return nil
	}
	names, err := readNames(s.top)
	for _, n := range names {
		if strings.HasPrefix(n, staleDir) {
			if err2 := removeTree(s.top, n); err2 != nil && err == nil {
				err = err2
			}
		}
	}
	s.stale = err != nil
	return err
}

// removeTree removes name under dir and, if it is a directory, what it holds.
func removeTree(dir int, name string) error {
	err := unix.Unlinkat(dir, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("remove %s: %w", name, os.NewSyscallError("unlinkat", err))
	}
	sub, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, os.NewSyscallError("openat", err))
	}
	names, _ := readNames(sub)
	for _, n := range names {
		removeTree(sub, n)
	}
	unix.Close(sub)
	if err := unix.Unlinkat(dir, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, os.NewSyscallError("unlinkat", err))
	}
	return nil
}

// readNames lists a directory through a descriptor of its own.
func readNames(dir int) ([]string, error) {
	fd, err := unix.Openat(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("openat", err)
	}
	f := os.NewFile(uintptr(fd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// start creates (or empties) file seq, then points current at it, then lets
// go of the previous file: current never names a file that does not exist.
func (s *shadow) start(seq int64) error {
	name := formatName(s.name[:], seq)
	fd, err := createFile(s.dir, name, true, 0o644)
	if errors.Is(err, unix.ENOENT) && s.dirRemoved() {
		err := s.recreate()
		s.repaired = shadowDir // for repair to report
		return err
	}
	if err != nil {
		return fmt.Errorf("create %s/%s: %w", shadowDir, cname(name), os.NewSyscallError("openat", err))
	}
	if err := s.writeCurrent(seq); err != nil {
		unix.Close(fd)
		return err
	}
	if s.fd >= 0 {
		if unlinked(s.fd) && s.repaired == "" {
			s.repaired = s.fileLabel() // moved on before repair saw it
		}
		unix.Close(s.fd)
	}
	s.seq, s.fd, s.n = seq, fd, 0
	return nil
}

// writeCurrent replaces current atomically (a temporary file and a rename).
func (s *shadow) writeCurrent(seq int64) error {
	fd, err := createFile(s.dir, s.curTmp, true, 0o644)
	if err != nil {
		return fmt.Errorf("create %s/%s: %w", shadowDir, currentTmp, os.NewSyscallError("openat", err))
	}
	b := formatCurrent(s.content[:0], seq, s.max)
	_, err = unix.Write(fd, b)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("write %s/%s: %w", shadowDir, currentTmp, os.NewSyscallError("write", err))
	}
	if err := renameat(s.dir, s.curTmp, s.dir, s.curName); err != nil {
		return fmt.Errorf("rename %s/%s: %w", shadowDir, currentTmp, os.NewSyscallError("renameat2", err))
	}
	return nil
}

// write writes recs (whole records) to the shadow files, counted in copied
// (writeAll).
func (s *shadow) write(recs []byte) (int, error) {
	n, err := s.writeAll(recs)
	s.copied += uint64(n)
	return n, err
}

// writeAll appends whole records, moving to the next file as soon as one holds
// max records, and returns how many it wrote. On a full file system the
// partial record is cut off and errDiskFull returned: the files stay valid.
func (s *shadow) writeAll(recs []byte) (written int, err error) {
	for len(recs) > 0 {
		chunk := recs[:min(int64(len(recs)), (s.max-s.n)*int64(s.recSize))]
		for len(chunk) > 0 {
			n, err := rawWrite(s.fd, chunk)
			if err != nil {
				unix.Ftruncate(s.fd, s.n*int64(s.recSize))
				if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
					return written, errDiskFull
				}
				return written, fmt.Errorf("write %s/%s: %w", shadowDir, cname(formatName(s.name[:], s.seq)), os.NewSyscallError("write", err))
			}
			n -= n % s.recSize // a short write of a partial record is written again
			chunk, recs = chunk[n:], recs[n:]
			s.n += int64(n / s.recSize)
			written += n / s.recSize
		}
		if s.n == s.max {
			if err := s.start(s.seq + 1); err != nil {
				if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
					return written, errDiskFull // the next file is tried again at the next write
				}
				return written, err
			}
		}
	}
	return written, nil
}

// empty reports whether the directory is in its client-less state: one empty
// file 0 named by current.
func (s *shadow) empty() bool { return s.seq == 0 && s.n == 0 }

// repair recreates what was removed under the daemon: the directory, the file
// being written, or current. It returns what it repaired ("" if nothing).
// What start repaired on its own (the directory, or a file it moved on
// from) waits in s.repaired, and is reported the same way.
func (s *shadow) repair() (string, error) {
	var err error
	switch {
	case s.repaired != "":
	case s.dirRemoved():
		err = s.recreate()
		s.repaired = shadowDir
	case unlinked(s.fd):
		s.repaired = s.fileLabel()
		err = s.start(s.seq + 1)
	case s.currentMissing():
		s.repaired = currentName
		err = s.writeCurrent(s.seq)
	}
	what := s.repaired
	s.repaired = ""
	return what, err
}

// currentMissing reports whether current has no name (a plain openat with
// O_PATH: fstatat would need the name as a fresh C string every second).
func (s *shadow) currentMissing() bool {
	fd, err := openat(s.dir, s.curName, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err == nil {
		unix.Close(fd)
	}
	return errors.Is(err, unix.ENOENT)
}

// fileLabel names the file being written, for the log.
func (s *shadow) fileLabel() string {
	return "shadow file " + cname(formatName(s.name[:], s.seq))
}

func (s *shadow) dirRemoved() bool { return unlinked(s.dir) }

// unlinked reports whether fd's file or directory has no name left.
func unlinked(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Nlink == 0
}

// recreate makes the shadow directory anew and starts again from file 0.
func (s *shadow) recreate() error {
	err := unix.Mkdirat(s.top, shadowDir, 0o755)
	if errors.Is(err, unix.EACCES) {
		// Landlock grants rights on the shadow directory the daemon
		// started with, none to make one beneath the top directory.
		return fmt.Errorf("%s was removed; the sandbox lets no new one be made: start the daemon again", shadowDir)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create %s: %w", shadowDir, os.NewSyscallError("mkdirat", err))
	}
	return s.open()
}

// usage returns the number of shadow files and their total size, from what
// the daemon wrote and collected (files removed by others count until the
// next collection); it makes no system call.
func (s *shadow) usage() (files, size int64) {
	files = s.seq - s.oldest + 1
	return files, ((files-1)*s.max + s.n) * int64(s.recSize)
}

// close lets go of the directory and the file being written, keeping them.
func (s *shadow) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
	if s.dir >= 0 {
		unix.Close(s.dir)
		s.dir = -1
	}
}

// removeAll deletes current first (so it never names a missing file), then
// the shadow files and the directory.
func (s *shadow) removeAll() error {
	if s.dir < 0 {
		return nil
	}
	unlinkat(s.dir, s.curName, 0)
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
	unix.Close(s.dir)
	s.dir = -1
	return removeTree(s.top, shadowDir)
}
