// Restarts: what a previous daemon left, stopped or crashed, taken over
// when it is provably a daemon's: the shadow directory (adopt, with the pure
// adoptVerdict) and the source files a crash left accounting on in
// (leftover), whose records after the last copy the daemon copies.
// Speaks fstatat(2), openat(2) (O_NOFOLLOW, O_NONBLOCK), pread(2) and the
// file contract in docs/PROTOCOL.md ("Files").

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// adoptEntry is what adoption knows of one name in a shadow directory.
type adoptEntry struct {
	name  string
	mode  uint32 // st_mode: type and permissions
	uid   uint32
	nlink uint64
	size  int64
}

func entryOf(name string, st *unix.Stat_t) adoptEntry {
	return adoptEntry{name, st.Mode, st.Uid, uint64(st.Nlink), st.Size}
}

// adoptPlan is what adoptVerdict found: shadow files oldest to newest, the
// newest holding records whole records; current to be rewritten when it
// names the file before the newest.
type adoptPlan struct {
	oldest, newest, records int64
	fixCurrent              bool
}

// adoptVerdict decides from plain facts whether a shadow directory is
// provably a daemon's, as docs/PROTOCOL.md ("Files") describes it: the directory
// root's, mode 0755; current and the shadow files root's regular files, mode
// 0644, one link each; current reading "<seq>/<max>" with this daemon's max;
// shadow files numbered without a gap up to seq, each but the newest exactly
// max records, the newest at most that; no other names but status and
// current.tmp (left by a crash mid-replacement). An empty file after the one
// current names, that one full, is a crash between creating the next file
// and naming it: adopted, and current rewritten. It returns why not ("" when
// adoptable). A torn last record of the newest (a crash mid-write) is left
// out of records.
func adoptVerdict(dir adoptEntry, entries []adoptEntry, current []byte, max int64, recSize int) (adoptPlan, string) {
	var p adoptPlan
	if why := daemonOwned(dir, unix.S_IFDIR, 0o755); why != "" {
		return p, why
	}
	var seqs []int64
	sizes := map[int64]int64{}
	haveCurrent := false
	for _, e := range entries {
		fileSeq, isShadow := parseName(e.name)
		switch {
		case isShadow, e.name == currentName, e.name == statusName, e.name == currentTmp:
			if why := daemonOwned(e, unix.S_IFREG, 0o644); why != "" {
				return p, why
			}
		default:
			return p, fmt.Sprintf("%s is not a daemon's", e.name)
		}
		haveCurrent = haveCurrent || e.name == currentName
		if isShadow {
			seqs = append(seqs, fileSeq)
			sizes[fileSeq] = e.size
		}
	}
	slices.Sort(seqs)
	full := max * int64(recSize)
	seq, curMax, ok := parseCurrent(current)
	fix := ok && len(seqs) > 1 && seqs[len(seqs)-1] == seq+1 && sizes[seq+1] == 0 && sizes[seq] == full
	if fix {
		seq++
	}
	switch {
	case !haveCurrent:
		return p, "no " + currentName
	case !ok:
		return p, fmt.Sprintf("%s reads %q", currentName, current)
	case curMax != max:
		return p, fmt.Sprintf("%s says %d records per file, not %d", currentName, curMax, max)
	case len(seqs) == 0 || seqs[len(seqs)-1] != seq:
		return p, fmt.Sprintf("%s names file %d, not the newest", currentName, seq)
	case seq-seqs[0] != int64(len(seqs)-1):
		return p, fmt.Sprintf("shadow files %d to %d with a gap", seqs[0], seq)
	case sizes[seq] > full:
		return p, fmt.Sprintf("file %d holds more than %d records", seq, max)
	}
	for _, f := range seqs[:len(seqs)-1] {
		if sizes[f] != full {
			return p, fmt.Sprintf("file %d holds %d bytes, not %d", f, sizes[f], full)
		}
	}
	return adoptPlan{seqs[0], seq, sizes[seq] / int64(recSize), fix}, ""
}

// daemonOwned says why e is not what the daemon makes: of type typ, root's,
// with mode perm, one link ("" when it is).
func daemonOwned(e adoptEntry, typ, perm uint32) string {
	switch {
	case e.mode&unix.S_IFMT != typ:
		return fmt.Sprintf("%s is not a %s", e.name, map[uint32]string{unix.S_IFDIR: "directory", unix.S_IFREG: "regular file"}[typ])
	case e.uid != 0:
		return fmt.Sprintf("%s is owned by uid %d", e.name, e.uid)
	case e.mode&0o7777 != perm:
		return fmt.Sprintf("%s has mode %04o, not %04o", e.name, e.mode&0o7777, perm)
	case typ == unix.S_IFREG && e.nlink != 1:
		return fmt.Sprintf("%s has %d links", e.name, e.nlink)
	}
	return ""
}

// adopt takes over the shadow directory a previous daemon left, stopped or
// crashed, when adoptVerdict says it is one: clients registered with that
// daemon read on in their files, and writing goes on at the newest file's
// record-aligned end. It returns why not ("" when adopted); then the
// directory is not taken over.
func (s *shadow) adopt() string {
	dir, err := openat(s.top, s.dirName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "open: " + err.Error()
	}
	fd, plan, why := s.inspect(dir)
	if why != "" {
		unix.Close(dir)
		return why
	}
	s.dir, s.fd, s.seq, s.n, s.oldest = dir, fd, plan.newest, plan.records, plan.oldest
	unlinkat(dir, s.curTmp, 0)
	if plan.fixCurrent {
		err = s.writeCurrent(s.seq)
	}
	if err == nil && s.n == s.max {
		err = s.start(s.seq + 1) // as when a write fills a file: the next starts at once
	}
	if err != nil {
		s.close()
		return err.Error()
	}
	s.adopted = true
	return ""
}

// inspect gathers adoptVerdict's facts of the directory dir and, when it
// says yes, opens the newest file for writing at its record-aligned end.
// Every open is O_NOFOLLOW|O_NONBLOCK: a symlink fails, a FIFO does not block.
func (s *shadow) inspect(dir int) (fd int, plan adoptPlan, why string) {
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return -1, plan, "fstat: " + err.Error()
	}
	dirEntry := entryOf(shadowDir, &st)
	names, err := readNames(dir)
	if err != nil {
		return -1, plan, "list: " + err.Error()
	}
	var entries []adoptEntry
	var current []byte
	for _, name := range names {
		if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return -1, plan, name + ": " + err.Error()
		}
		entries = append(entries, entryOf(name, &st))
		if name == currentName && st.Mode&unix.S_IFMT == unix.S_IFREG {
			current = readSmall(dir, name)
		}
	}
	plan, why = adoptVerdict(dirEntry, entries, current, s.max, sizeofAcctV3)
	if why != "" {
		return -1, plan, why
	}
	name := formatName(s.name[:], plan.newest)
	fd, err = openat(dir, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, plan, cname(name) + ": " + err.Error()
	}
	end := plan.records * sizeofAcctV3
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		why = cname(name) + " changed under the daemon"
	} else if err := unix.Ftruncate(fd, end); err != nil { // a torn last record
		why = cname(name) + ": ftruncate: " + err.Error()
	} else if _, err := unix.Seek(fd, end, io.SeekStart); err != nil {
		why = cname(name) + ": lseek: " + err.Error()
	}
	if why != "" {
		unix.Close(fd)
		return -1, plan, why
	}
	return fd, plan, ""
}

// lastRecord reads the newest record the shadow files hold into rec; false
// when they hold none, or it cannot be read (then catchUp copies the whole
// leftover: a record twice rather than none).
func (s *shadow) lastRecord(rec []byte) bool {
	seq, n := s.seq, s.n
	if n == 0 {
		if seq == s.oldest {
			return false
		}
		seq, n = seq-1, s.max // full: a file is started as soon as one is
	}
	fd, err := openat(s.dir, formatName(s.name[:], seq), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	m, err := unix.Pread(fd, rec, (n-1)*int64(len(rec)))
	return err == nil && m == len(rec)
}

// readSmall reads the first bytes of a small file (current) under dir.
func readSmall(dir int, name string) []byte {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	b := make([]byte, 64)
	n, _ := unix.Read(fd, b)
	return b[:max(n, 0)]
}

// leftover holds the source files a previous daemon left, opened before
// this one replaces their names: after a crash the kernel went on writing
// into them, and the records after that daemon's last copy are still to be
// copied. Read as one stream, pacct_source then pacct_source.next, they are
// in the kernel's order whatever step of a rotation the crash interrupted:
// mid-rotation the kernel writes into .next while pacct_source holds the
// rest of the old file; otherwise .next is empty.
type leftover struct {
	fds [2]int // -1: missing, or not a file a daemon made
}

// openLeftover opens the source files in top that are provably a daemon's:
// root's regular files, mode 0600, one link (O_NOFOLLOW|O_NONBLOCK: a
// symlink fails, a FIFO does not block).
func openLeftover(top int) leftover {
	l := leftover{fds: [2]int{-1, -1}}
	for i, name := range []string{sourceName, sourceNext} {
		fd, err := unix.Openat(top, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || daemonOwned(entryOf(name, &st), unix.S_IFREG, 0o600) != "" {
			unix.Close(fd)
			continue
		}
		l.fds[i] = fd
	}
	return l
}

// after finds the last occurrence of rec in the stream, at a record
// boundary, and returns where the records after it start; the start of the
// stream when rec is not there.
func (l *leftover) after(rec, buf []byte) (file int, off int64) {
	size := len(rec)
	// A read error ends the search; catchUp's each reports it.
	l.each(0, 0, buf, size, func(i int, pos int64, recs []byte) error {
		for j := 0; j < len(recs); j += size {
			if bytes.Equal(recs[j:j+size], rec) {
				file, off = i, pos+int64(j+size)
			}
		}
		return nil
	})
	return file, off
}

// each passes the whole records of the stream from (file, off) on to f,
// a buffer at a time, with the file and offset they were read at.
func (l *leftover) each(file int, off int64, buf []byte, size int, f func(file int, pos int64, recs []byte) error) error {
	for i := file; i < len(l.fds); i++ {
		for pos := off; l.fds[i] >= 0; {
			n, err := unix.Pread(l.fds[i], buf, pos)
			if err != nil {
				return fmt.Errorf("read the old %s: %w", []string{sourceName, sourceNext}[i], os.NewSyscallError("pread", err))
			}
			n -= n % size
			if n <= 0 {
				break
			}
			if err := f(i, pos, buf[:n]); err != nil {
				return err
			}
			pos += int64(n)
		}
		off = 0
	}
	return nil
}

func (l *leftover) close() { closeAll(l.fds[:]) }

// catchUp copies what a crashed daemon left uncopied in its source files
// (leftover): the records after the newest one the adopted shadow files
// hold, or all of them when those hold none (a client registered, and the
// daemon died before its first copy; with no client they are dropped). The
// stream's last record is this daemon's own when accounting was still on
// into the old files (acct(2) wrote it there when the daemon switched
// files): only that one is left out, as records before it may be of
// processes that had this daemon's pid before it (a storm wraps pid_max).
// It returns how many records it handed on.
func (d *daemon) catchUp(old *leftover) (int, error) {
	size := d.src.format.size
	last := make([]byte, size)
	file, off := 0, int64(0)
	if d.sh.lastRecord(last) {
		file, off = old.after(last, d.src.buf)
	}
	n, held := 0, false // last holds the stream's last record read so far
	err := old.each(file, off, d.src.buf, size, func(_ int, _ int64, recs []byte) error {
		if held {
			if err := d.deliverAll(last); err != nil {
				return err
			}
			n++
		}
		if body := recs[:len(recs)-size]; len(body) > 0 {
			if err := d.deliverAll(body); err != nil {
				return err
			}
			n += len(body) / size
		}
		held = copy(last, recs[len(recs)-size:]) == size
		return nil
	})
	if err == nil && held && !d.src.isSelf(last) {
		err = d.deliverAll(last)
		n++
	}
	return n, err
}
