package main

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestAdoptVerdict(t *testing.T) {
	dir := adoptEntry{shadowDir, unix.S_IFDIR | 0o755, 0, 2, 4096}
	file := func(name string, size int64) adoptEntry { return adoptEntry{name, unix.S_IFREG | 0o644, 0, 1, size} }
	good := []adoptEntry{file(currentName, 4), file("0000000003.paf", 128), file("0000000004.paf", 128),
		file("0000000005.paf", 100), file(statusName, 300), file(currentTmp, 4)}
	with := func(i int, f func(*adoptEntry)) []adoptEntry {
		e := slices.Clone(good)
		f(&e[i])
		return e
	}
	for _, tt := range []struct {
		name    string
		dir     adoptEntry
		entries []adoptEntry
		current string
		want    adoptPlan
		why     string
	}{
		{"a daemon's, torn last record", dir, good, "5/2", adoptPlan{3, 5, 1, false}, ""},
		{"newest full", dir, with(3, func(e *adoptEntry) { e.size = 128 }), "5/2", adoptPlan{3, 5, 2, false}, ""},
		{"one empty file", dir, []adoptEntry{file(currentName, 3), file("0000000000.paf", 0)}, "0/2", adoptPlan{0, 0, 0, false}, ""},
		{"current with blanks", dir, good, " 5/ 2\n", adoptPlan{3, 5, 1, false}, ""},
		{"next file made, not named yet", dir, with(3, func(e *adoptEntry) { e.size = 0 }), "4/2", adoptPlan{3, 5, 0, true}, ""},
		{"next file not empty", dir, with(3, func(e *adoptEntry) { e.size = 64 }), "4/2", adoptPlan{}, "current names file 4, not the newest"},
		{"directory a symlink", adoptEntry{shadowDir, unix.S_IFLNK | 0o777, 0, 1, 0}, good, "5/2", adoptPlan{}, "pacct_shadow.d is not a directory"},
		{"directory not root's", adoptEntry{shadowDir, unix.S_IFDIR | 0o755, 1000, 2, 0}, good, "5/2", adoptPlan{}, "owned by uid 1000"},
		{"directory writable", adoptEntry{shadowDir, unix.S_IFDIR | 0o777, 0, 2, 0}, good, "5/2", adoptPlan{}, "mode 0777"},
		{"current a symlink", dir, with(0, func(e *adoptEntry) { e.mode = unix.S_IFLNK | 0o777 }), "", adoptPlan{}, "current is not a regular file"},
		{"file a FIFO", dir, with(2, func(e *adoptEntry) { e.mode = unix.S_IFIFO | 0o644 }), "5/2", adoptPlan{}, "0000000004.paf is not a regular file"},
		{"file hard-linked", dir, with(1, func(e *adoptEntry) { e.nlink = 2 }), "5/2", adoptPlan{}, "0000000003.paf has 2 links"},
		{"file not root's", dir, with(3, func(e *adoptEntry) { e.uid = 1 }), "5/2", adoptPlan{}, "owned by uid 1"},
		{"file writable by others", dir, with(3, func(e *adoptEntry) { e.mode |= 0o002 }), "5/2", adoptPlan{}, "mode 0646"},
		{"current.tmp a directory", dir, with(5, func(e *adoptEntry) { e.mode = unix.S_IFDIR | 0o755 }), "5/2", adoptPlan{}, "current.tmp is not a regular file"},
		{"status hard-linked", dir, with(4, func(e *adoptEntry) { e.nlink = 3 }), "5/2", adoptPlan{}, "status has 3 links"},
		{"short non-newest file", dir, with(2, func(e *adoptEntry) { e.size = 64 }), "5/2", adoptPlan{}, "file 4 holds 64 bytes, not 128"},
		{"newest too long", dir, with(3, func(e *adoptEntry) { e.size = 129 }), "5/2", adoptPlan{}, "file 5 holds more than 2 records"},
		{"a gap", dir, with(2, func(e *adoptEntry) { e.name = "0000000002.paf" }), "5/2", adoptPlan{}, "with a gap"},
		{"current names an older file", dir, good, "4/2", adoptPlan{}, "current names file 4, not the newest"},
		{"current names a missing file", dir, good, "6/2", adoptPlan{}, "current names file 6"},
		{"another size", dir, good, "5/10000", adoptPlan{}, "current says 10000 records per file, not 2"},
		{"current garbage", dir, good, "five", adoptPlan{}, `current reads "five"`},
		{"no current", dir, good[1:], "", adoptPlan{}, "no current"},
		{"a stranger's file", dir, append(slices.Clone(good), file("notes.txt", 1)), "5/2", adoptPlan{}, "notes.txt is not a daemon's"},
		{"no shadow file", dir, []adoptEntry{file(currentName, 3)}, "0/2", adoptPlan{}, "current names file 0, not the newest"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, why := adoptVerdict(tt.dir, tt.entries, []byte(tt.current), 2, 64)
			if got != tt.want || !strings.Contains(why, tt.why) || (tt.why == "") != (why == "") {
				t.Errorf("adoptVerdict = %+v, %q; want %+v, %q", got, why, tt.want, tt.why)
			}
		})
	}
}
