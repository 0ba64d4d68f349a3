package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestFormatName(t *testing.T) {
	for _, tt := range []struct {
		seq  int64
		want string
	}{{0, "0000000000.paf"}, {7, "0000000007.paf"}, {1234567890, "1234567890.paf"}} {
		t.Run(tt.want, func(t *testing.T) {
			var b [16]byte
			got := formatName(b[:], tt.seq)
			if cname(got) != tt.want || got[len(got)-1] != 0 {
				t.Errorf("got %q, want %q NUL-terminated", got, tt.want)
			}
			if seq, ok := parseName(tt.want); !ok || seq != tt.seq {
				t.Errorf("parseName(%q) = %d, %v; want %d", tt.want, seq, ok, tt.seq)
			}
		})
	}
	for _, bad := range []string{"current", "000000000.paf", "00000000000.paf", "000000000a.paf", "0000000000.pa", "+000000001.paf"} {
		if _, ok := parseName(bad); ok {
			t.Errorf("parseName(%q) accepted", bad)
		}
	}
}

func TestCurrent(t *testing.T) {
	for _, tt := range []struct {
		in       string
		seq, max int64
		ok       bool
	}{
		{"0/10000", 0, 10000, true},
		{"12/1000", 12, 1000, true},
		{"  3/ 10\n", 3, 10, true}, // fscanf skips blanks before each %ld
		{"3/10 trailing", 3, 10, true},
		{"3 /10", 0, 0, false}, // no blank allowed before '/'
		{"/10", 0, 0, false},
		{"3/", 0, 0, false},
		{"", 0, 0, false},
		{"x/1", 0, 0, false},
		{"-1/5", -1, 5, true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			seq, max, ok := parseCurrent([]byte(tt.in))
			if seq != tt.seq || max != tt.max || ok != tt.ok {
				t.Errorf("got %d/%d %v, want %d/%d %v", seq, max, ok, tt.seq, tt.max, tt.ok)
			}
		})
	}
	if got := string(formatCurrent(nil, 5, 10000)); got != "5/10000" {
		t.Errorf("formatCurrent = %q, want %q (no newline)", got, "5/10000")
	}
}

func FuzzCurrent(f *testing.F) {
	f.Add([]byte("0/10000"), int64(3), int64(10))
	f.Add([]byte(" 7/9x"), int64(0), int64(1))
	f.Fuzz(func(t *testing.T, in []byte, seq, max int64) {
		parseCurrent(in) // never panics
		if seq < 0 || max <= 0 {
			return
		}
		s, m, ok := parseCurrent(formatCurrent(nil, seq, max))
		if !ok || s != seq || m != max {
			t.Errorf("round trip of %d/%d gave %d/%d %v", seq, max, s, m, ok)
		}
		// Go's Sscanf is fscanf's twin where blanks are plain spaces.
		if bytes.ContainsFunc(in, func(r rune) bool { return r != ' ' && unicode.IsSpace(r) }) {
			return
		}
		var want1, want2 int64
		n, _ := fmt.Sscanf(string(in), "%d/%d", &want1, &want2)
		got1, got2, ok := parseCurrent(in)
		if ok != (n == 2) || ok && (got1 != want1 || got2 != want2) {
			t.Errorf("parseCurrent(%q) = %d/%d %v; Sscanf: %d/%d (%d)", in, got1, got2, ok, want1, want2, n)
		}
	})
}

// testShadow makes a shadow directory in a temporary top directory.
func testShadow(t testing.TB, max int64) (*shadow, string) {
	t.Helper()
	top := t.TempDir()
	fd, err := unix.Open(top, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	s := newShadow(fd, max)
	s.recSize = 64
	if _, err := s.create(); err != nil {
		t.Fatal(err)
	}
	return s, filepath.Join(top, shadowDir)
}

func records(n, from int) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, record(3, uint32(from+i), 0, "r")...)
	}
	return b
}

func readCurrent(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, currentName))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestShadowWrite(t *testing.T) {
	s, dir := testShadow(t, 10)
	if got := readCurrent(t, dir); got != "0/10" {
		t.Fatalf("current after create = %q, want 0/10", got)
	}
	for _, n := range []int{3, 7, 15} { // fills 0 exactly, then 1 and half of 2
		if w, err := s.write(records(n, 0)); err != nil || w != n {
			t.Fatalf("write %d: wrote %d, %v", n, w, err)
		}
	}
	for seq, want := range []int64{640, 640, 320} {
		st, err := os.Stat(filepath.Join(dir, pafName(int64(seq))))
		if err != nil || st.Size() != want || st.Mode().Perm() != 0o644 {
			t.Errorf("file %d: %v, %v; want %d bytes, mode 0644", seq, st, err, want)
		}
	}
	if got := readCurrent(t, dir); got != "2/10" {
		t.Errorf("current = %q, want 2/10", got)
	}
	// Exactly full: the next file exists and current names it at once.
	s.write(records(5, 0))
	if st, err := os.Stat(filepath.Join(dir, "0000000003.paf")); err != nil || st.Size() != 0 {
		t.Errorf("file 3 after filling 2: %v, %v; want empty", st, err)
	}
	if got := readCurrent(t, dir); got != "3/10" {
		t.Errorf("current = %q, want 3/10", got)
	}
}

func TestShadowResetAndCollect(t *testing.T) {
	s, dir := testShadow(t, 2)
	s.write(records(9, 0)) // files 0..3 full, 4 holds one record
	// A client read-locks file 2 (an OFD lock conflicts with the daemon's
	// POSIX probe even inside one process).
	f, err := os.Open(filepath.Join(dir, "0000000002.paf"))
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	removed, forced, _, err := s.collect()
	if err != nil || removed != 2 || forced != 0 {
		t.Fatalf("collect removed %d (%d read-locked), %v; want files 0 and 1", removed, forced, err)
	}
	seqs, _ := s.list()
	if fmt.Sprint(seqs) != "[2 3 4]" {
		t.Errorf("after collect: %v, want [2 3 4] (stops at the locked file)", seqs)
	}
	if files, size := s.usage(); files != 3 || size != 5*64 {
		t.Errorf("usage: %d files, %d bytes; want 3 and %d", files, size, 5*64)
	}
	// Within the limit, the locked file stays; one byte above, it goes, and
	// the lock holder is named (-1: an OFD lock has no pid).
	s.limit = 5 * 64
	if removed, forced, _, _ := s.collect(); removed != 0 || forced != 0 {
		t.Errorf("collect at the limit removed %d (%d read-locked), want none", removed, forced)
	}
	s.limit--
	removed, forced, holder, _ := s.collect()
	if seqs, _ = s.list(); removed != 2 || forced != 1 || holder != -1 || fmt.Sprint(seqs) != "[4]" {
		t.Errorf("collect above the limit removed %d (%d read-locked, holder %d), left %v; want 2 (1, -1), [4]", removed, forced, holder, seqs)
	}
	f.Close()
	if removed, _, _, _ := s.collect(); removed != 0 {
		t.Errorf("second collect removed %d, want 0 (never the current file)", removed)
	}
	if err := s.reset(); err != nil {
		t.Fatal(err)
	}
	if err := s.dropOthers(); err != nil {
		t.Fatal(err)
	}
	seqs, _ = s.list()
	st, _ := os.Stat(filepath.Join(dir, "0000000000.paf"))
	if fmt.Sprint(seqs) != "[0]" || st.Size() != 0 || readCurrent(t, dir) != "0/2" || !s.empty() {
		t.Errorf("after reset: files %v, size %d, current %q; want one empty file 0 and 0/2", seqs, st.Size(), readCurrent(t, dir))
	}
}

func TestShadowStaleAndRepair(t *testing.T) {
	s, dir := testShadow(t, 2)
	s.write(records(3, 0))
	os.WriteFile(filepath.Join(dir, "junk"), []byte("x"), 0o644)
	// A second daemon finds the directory left behind: it moves it aside and
	// removes it.
	s2 := newShadow(s.top, 2)
	s2.recSize = 64
	if note, err := s2.create(); err != nil || !strings.Contains(note, "junk is not a daemon's") {
		t.Fatalf("create over a directory holding junk: %q, %v", note, err)
	}
	names, _ := readNames(s.top)
	if fmt.Sprint(names) != "["+shadowDir+"]" {
		t.Errorf("top holds %v, want only %s", names, shadowDir)
	}
	os.Remove(filepath.Join(dir, currentName))
	if what, err := s2.repair(); what != currentName || err != nil || readCurrent(t, dir) != "0/2" {
		t.Errorf("repair of current: %q, %v", what, err)
	}
	os.Remove(filepath.Join(dir, "0000000000.paf"))
	if what, err := s2.repair(); err != nil || s2.seq != 1 || readCurrent(t, dir) != "1/2" {
		t.Errorf("repair of the file being written: %q, %v, seq %d", what, err, s2.seq)
	}
	os.RemoveAll(dir)
	if what, err := s2.repair(); what != shadowDir || err != nil || readCurrent(t, dir) != "0/2" {
		t.Errorf("repair of the directory: %q, %v", what, err)
	}
	// Removed while the daemon writes: creating the next file makes it anew
	// (file 0 again; the 2 records before went to the removed file).
	os.RemoveAll(dir)
	if n, err := s2.write(records(5, 0)); n != 5 || err != nil || readCurrent(t, dir) != "1/2" {
		t.Errorf("writing on after the directory was removed: %d, %v", n, err)
	}
	if what, err := s2.repair(); what != shadowDir || err != nil {
		t.Errorf("repair after the write recreated the directory: %q, %v", what, err)
	}
	if what, _ := s2.repair(); what != "" {
		t.Errorf("reported twice: %q", what)
	}
	if err := s2.removeAll(); err != nil {
		t.Fatal(err)
	}
	if names, _ := readNames(s.top); len(names) != 0 {
		t.Errorf("after removeAll top holds %v", names)
	}
}

// copyStep makes a daemon whose copy step runs on real files in a temporary
// top directory: a plain file stands in for the kernel's source file (the
// returned descriptor appends to it) and a private semaphore set, with one
// client registered, for the public one.
func copyStep(tb testing.TB, max int64) (*daemon, int) {
	tb.Helper()
	s, _ := testShadow(tb, max)
	src := newSource(s.top)
	if err := src.create(); err != nil {
		tb.Fatal(err)
	}
	src.format, _ = parseFormat(record(3, 0, 0, ""))
	w, err := unix.Openat(s.top, sourceName, unix.O_WRONLY|unix.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(w) })
	id, err := semget(unix.IPC_PRIVATE, 2, 0o600)
	if err != nil {
		tb.Skipf("semget: %v (no System V IPC here)", err)
	}
	tb.Cleanup(func() { semctl(id, 0, unix.IPC_RMID, nil) })
	vals := [2]uint16{maxClients - 1, 1}
	semctl(id, 0, setAll, unsafe.Pointer(&vals[0]))
	d := newDaemon(options{records: max, sourceMax: 1 << 40}, s.top, newLogger(nil), nil)
	d.src, d.sh, d.sem.public = src, s, id
	d.src.buf = make([]byte, readRecords*64)
	return d, w
}

// TestCollectAllocs: collection runs every --gc-interval for as long as the
// daemon does; garbage there would grow its memory until a GC, hours later.
func TestCollectAllocs(t *testing.T) {
	s, _ := testShadow(t, 2)
	batch := records(4, 0) // two more files each time
	s.write(batch)
	s.collect() // buffers grow once
	allocs := testing.AllocsPerRun(100, func() {
		s.write(batch)
		if n, _, _, err := s.collect(); n != 2 || err != nil {
			t.Fatalf("collect removed %d files (%v), want 2", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per collection, want 0", allocs)
	}
	if seqs, _ := s.list(); !slices.Equal(seqs, []int64{s.seq}) {
		t.Errorf("files left %v, want only the current one (%d)", seqs, s.seq)
	}
}

// TestCopyAllocs proves that the copy step (read the source, check the
// semaphores, write, rotate shadow files) allocates nothing.
func TestCopyAllocs(t *testing.T) {
	d, w := copyStep(t, 100)
	batch := records(37, 0)
	allocs := testing.AllocsPerRun(200, func() {
		unix.Write(w, batch)
		if err := d.pump(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per wakeup, want 0", allocs)
	}
	if want := uint64(201 * 37); d.sh.copied != want {
		t.Errorf("copied %d records, want %d", d.sh.copied, want)
	}
	if d.sh.seq != int64(201*37/100) {
		t.Errorf("at shadow file %d, want %d", d.sh.seq, 201*37/100)
	}
}

// BenchmarkCopyStep measures one turn of the loop's copy step (read the
// source, check the semaphores, write the shadow file) for 32 records.
func BenchmarkCopyStep(b *testing.B) {
	d, w := copyStep(b, 10000)
	batch := records(32, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(batch)))
	for i := 0; i < b.N; i++ {
		unix.Write(w, batch)
		if err := d.pump(); err != nil {
			b.Fatal(err)
		}
	}
}
