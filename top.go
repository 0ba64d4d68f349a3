// The top directory, checked before anything is made in it, and the
// descriptors the daemon inherits, closed before it starts.
// Speaks open(2) (O_NOFOLLOW, O_DIRECTORY), fstat(2) and proc(5)
// (/proc/self/fd).

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInherited closes every descriptor above stderr that the caller left
// open, except keep (the top directory, the readiness pipe). The Go
// runtime's poller (an epoll and an eventfd, made when a standard stream is
// non-blocking) stays: it is the runtime's own.
func closeInherited(keep []int) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 || slices.Contains(keep, fd) {
			continue
		}
		if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); link == "anon_inode:[eventpoll]" || link == "anon_inode:[eventfd]" {
			continue
		}
		unix.Close(fd)
	}
}

// maxTop is the longest top directory whose shadow file paths fit atop's
// 512-byte path buffers (docs/PROTOCOL.md); oldAtopTop, the longest that fits
// the 128 bytes of atop before 2.12.
const (
	maxTop     = 512 - len("/"+shadowDir+"/0000000000.paf") - 1
	oldAtopTop = 128 - len("/"+shadowDir+"/0000000000.paf") - 1
)

// openTop opens the top directory without following a final symlink and
// checks it and every directory above it as OpenSSH's StrictModes does: a
// local user who can rename any of them can put a tree of their own where
// atop looks for shadow files. path is absolute.
func openTop(path string) (int, error) {
	if len(path) > maxTop {
		return -1, fmt.Errorf("top directory %.40s...: %d bytes long, atop's path buffers take at most %d", path, len(path), maxTop)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		reason := err.Error()
		var st unix.Stat_t
		switch {
		case unix.Lstat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
			reason = "a symbolic link"
		case errors.Is(err, unix.ENOTDIR):
			reason = "not a directory"
		}
		return -1, fmt.Errorf("top directory %s: %s", path, reason)
	}
	if err := strictTree(fd, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// strictTree checks the directory fd (named path) and those above it, both
// the ones its name passes through (a symbolic link among them must be
// root's) and its real parents up to "/" (through ".."): each owned by
// root and not writable by group or others, unless sticky (above the top
// directory only: /tmp is fine, a top directory like it is not).
func strictTree(fd int, path string) error {
	for p := filepath.Dir(path); p != "/"; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("directory %s above the top directory: %w", p, err)
		}
		if why := strictMode(&st, true); why != "" {
			return fmt.Errorf("directory %s above the top directory %s: %s", p, path, why)
		}
	}
	dir, err := unix.Dup(fd)
	for above := false; err == nil; above = true {
		var st, up unix.Stat_t
		if err = unix.Fstat(dir, &st); err != nil {
			break
		}
		if why := strictMode(&st, above); why != "" {
			what := "top directory " + path
			if above {
				name, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", dir))
				what = fmt.Sprintf("directory %s above the top directory %s", name, path)
			}
			err = fmt.Errorf("%s: %s", what, why)
			break
		}
		parent, perr := unix.Openat(dir, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if perr == nil && unix.Fstat(parent, &up) == nil && up.Dev == st.Dev && up.Ino == st.Ino {
			unix.Close(parent)
			break // "/" is its own parent
		}
		unix.Close(dir)
		dir, err = parent, perr
	}
	unix.Close(dir)
	return err
}

// strictMode says why a directory (or a symbolic link) is not safe to
// trust, "" when it is.
func strictMode(st *unix.Stat_t, above bool) string {
	switch {
	case st.Uid != 0:
		return fmt.Sprintf("owned by uid %d, not root", st.Uid)
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return "" // its mode means nothing; its directory is checked
	case st.Mode&0o022 != 0 && !(above && st.Mode&unix.S_ISVTX != 0):
		return fmt.Sprintf("writable by group or others (mode %04o)", st.Mode&0o7777)
	}
	return ""
}
