package main

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// record builds a 64-byte record of version v with pid, btime and comm.
func record(v byte, pid, btime uint32, comm string) []byte {
	r := make([]byte, 64)
	r[offVersion] = v
	order := binary.ByteOrder(binary.LittleEndian)
	if v&acctByteorder != 0 {
		order = binary.BigEndian
	}
	if v&0xf == 3 {
		order.PutUint32(r[offV3Pid:], pid)
		order.PutUint32(r[offV3Btime:], btime)
		copy(r[offV3Comm:offV3Comm+acctComm], comm)
	} else {
		order.PutUint32(r[offV2Btime:], btime)
		copy(r[offV2Comm:offV2Comm+acctComm], comm)
	}
	return r
}

func TestParseFormat(t *testing.T) {
	for _, tt := range []struct {
		name    string
		rec     []byte
		version int
		big     bool
		bad     bool
	}{
		{"v3 little-endian", record(3, 1, 2, "x"), 3, false, false},
		{"v3 big-endian", record(0x83, 1, 2, "x"), 3, true, false},
		{"v2", record(2, 0, 2, "x"), 2, false, false},
		{"v2 big-endian", record(0x82, 0, 2, "x"), 2, true, false},
		{"v1", record(1, 0, 0, ""), 0, false, true},
		{"v0", record(0, 0, 0, ""), 0, false, true},
		{"v4", record(4, 0, 0, ""), 0, false, true},
		{"v3 with stray bits", record(0x13, 0, 0, ""), 0, false, true},
		{"one byte", []byte{0}, 0, false, true},
		{"empty", nil, 0, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseFormat(tt.rec)
			if tt.bad {
				if !errors.Is(err, errFormat) {
					t.Fatalf("got %v, %v; want errFormat", f, err)
				}
				return
			}
			if err != nil || f.version != tt.version || f.size != 64 || (f.order == binary.BigEndian) != tt.big {
				t.Errorf("got %+v, %v; want version %d, 64 bytes, big-endian %v", f, err, tt.version, tt.big)
			}
		})
	}
}

// TestSelf: the daemon's own record (the one a switch writes into the old
// file) is told from others', by pid in version 3 and by start time and
// name in version 2.
func TestSelf(t *testing.T) {
	for _, v := range []byte{2, 3, 0x83} {
		f, _ := parseFormat(record(v, 0, 0, ""))
		self := record(v, 42, 1000, "atopacctd")
		s := &source{format: f, self: f.identity(self)}
		others := [][]byte{
			record(v, 43, 1001, "atopacctd"), // same name only: another's
			record(v, 42, 999, "sh"),         // same pid: the daemon's in v3 only
			record(v, 7, 5, "true"),
		}
		var recs []byte
		recs = append(recs, others[0]...)
		recs = append(recs, self...)
		recs = append(recs, others[1]...)
		recs = append(recs, self...)
		recs = append(recs, others[2]...)
		wantN := 3
		if v&0xf == 3 {
			wantN = 2 // version 3 tells the daemon by its pid alone
		}
		if got := s.others(recs); got != wantN {
			t.Errorf("version %#x: %d records of others, want %d", v, got, wantN)
		}
		if !s.isSelf(self) || s.isSelf(others[2]) {
			t.Errorf("version %#x: isSelf(own record) %v, isSelf(another) %v; want true, false", v, s.isSelf(self), s.isSelf(others[2]))
		}
	}
}

func TestRecordFields(t *testing.T) {
	f, _ := parseFormat(record(0x83, 0, 0, ""))
	r := record(0x83, 0x01020304, 0, "true")
	if got := f.pid(r); got != 0x01020304 {
		t.Errorf("pid: got %#x, want 0x01020304", got)
	}
}

// FuzzParseFormat: version 2 and 3 (either byte order) are accepted with
// 64-byte records, anything else refused as errFormat; never a panic.
func FuzzParseFormat(f *testing.F) {
	for _, rec := range [][]byte{{0, 3}, {0, 0x83}, {0, 2}, {0, 0x82}, {0, 1}, {0, 0x13}, {}, {3}} {
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		got, err := parseFormat(rec)
		if len(rec) <= offVersion {
			if !errors.Is(err, errFormat) {
				t.Errorf("parseFormat(%x): %v, want errFormat", rec, err)
			}
			return
		}
		v := rec[offVersion]
		if ok := v&^acctByteorder == 2 || v&^acctByteorder == 3; ok != (err == nil) || err != nil && !errors.Is(err, errFormat) {
			t.Errorf("version byte %#x: %+v, %v", v, got, err)
		}
		if err == nil && (got.size != 64 || got.version != int(v&^acctByteorder) || (got.order == binary.BigEndian) != (v&acctByteorder != 0)) {
			t.Errorf("version byte %#x: %+v", v, got)
		}
	})
}

// TestFinishSwitchError: the file emptied after a switch is named
// pacct_source until the names are exchanged; the error says so.
func TestFinishSwitchError(t *testing.T) {
	s, _ := testShadow(t, 10)
	src := newSource(s.top)
	if err := src.create(); err != nil {
		t.Fatal(err)
	}
	ro, err := unix.Openat(s.top, sourceName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(src.fds[0])
	src.fds[0] = ro // ftruncate fails on it
	err = src.finishSwitch()
	if err == nil || !strings.HasPrefix(err.Error(), "empty "+sourceName+":") {
		t.Errorf("got %v, want an error naming %s", err, sourceName)
	}
}
