// The copy: what the source files hold is copied to the shadow files while
// a client may want it, dropped when none can, and held while the disk
// guard holds (disk.go); switches of the source file are finished or begun
// on the way (rotate.go). One turn's copy allocates nothing.
// Speaks read(2) and write(2) through sys.go.

package main

import (
	"errors"
	"math"
)

// pump copies what the source files hold now. While the disk guard holds
// (the shadow file system is nearly full) the records stay in the source
// files instead (hold). Then it finishes a switch whose old file is
// drained, or begins one once the file holds --source-max bytes. When the
// kernel is to resume a suspended accounting (a new file is checked at its
// first record) the switch comes first, before any copying: every exit
// until then goes unrecorded.
func (d *daemon) pump() error {
	if d.rot.armed || d.disk.low {
		d.watchSuspend(d.src.lookFree())
	}
	if !d.src.switching && d.rot.due(d.turn.now, false) { // a resume
		if err := d.beginRotation(); err != nil {
			return err
		}
	}
	if d.disk.low {
		d.checkDisk() // at every wakeup while low: the first with room copies the backlog
		if d.disk.low {
			return d.hold()
		}
	}
	if err := d.drain(); err != nil {
		return err
	}
	switch {
	case d.disk.low: // a write found no space
		return d.hold()
	case d.src.switching:
		return d.finishRotation()
	case !d.rot.due(d.turn.now, d.src.off >= d.opts.sourceMax):
		return nil
	}
	if err := d.beginRotation(); err != nil || !d.src.switching {
		return err
	}
	if err := d.drain(); err != nil || d.disk.low { // the old file, to its end
		return err
	}
	return d.finishRotation()
}

// drain copies records from the file being read until its end, or until
// deliver holds them back (they stay in the file, read again next time).
// The old file of a switch ends with a record about the daemon itself,
// written by the switch: it is left out.
func (d *daemon) drain() error {
	size := d.src.format.size
	for {
		raw, full, err := d.src.read(math.MaxInt64)
		if err != nil {
			return fail(exitFiles, err)
		}
		if d.src.fresh() {
			d.recordsArrive()
		}
		for start := 0; start < len(raw); {
			end := start
			for end < len(raw) && !(d.src.switching && d.src.isSelf(raw[end:end+size])) {
				end += size
			}
			if end > start {
				done, err := d.deliver(raw[start:end])
				if err != nil {
					return err
				}
				if done < end-start {
					if err := d.src.unread(len(raw) - start - done); err != nil {
						return fail(exitFiles, err)
					}
					return nil
				}
			}
			start = end + size // past the record about the daemon
		}
		if !full {
			return nil
		}
	}
}

// deliver copies records to the shadow files when a client may want them,
// and drops them when none can. It returns the bytes it consumed: while
// the disk guard holds none (the records stay in the source file), and
// when a write finds no space, those written (the guard holds from then on).
func (d *daemon) deliver(recs []byte) (int, error) {
	size := d.src.format.size
	want, err := d.clientsPresent()
	if err != nil {
		return 0, fail(exitRunning, err)
	}
	switch {
	case !want:
		d.turn.pace.count(uint64(len(recs) / size))
		d.clients.drop(uint64(len(recs) / size))
		return len(recs), nil
	case d.disk.low:
		return 0, nil
	}
	written, err := d.sh.write(recs)
	d.turn.pace.count(uint64(written))
	if errors.Is(err, errDiskFull) {
		d.disk.full()
		d.log.warnf("%s: %v: keeping records in the source file until there is room", shadowDir, err)
		return written * size, nil
	}
	if err != nil {
		return written * size, fail(exitFiles, err)
	}
	return len(recs), nil
}
