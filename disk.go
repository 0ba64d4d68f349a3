// The disk guard: below diskFreePct free space on the shadow file system
// (or when a write finds none), records stay in the source files, up to
// --backlog bytes; beyond, the oldest are skipped, counted and logged once
// an episode. Copying resumes with the backlog once there is room.
// Speaks statfs(2).

package main

// freeBelow reports whether the file system of fd has less than pct % of its
// blocks free (exactly, not with the kernel's rounding); ok is false when it
// cannot tell.
func freeBelow(fd int, pct int64) (below, ok bool) {
	f, ok := lookFree(fd)
	return ok && f.avail*100 < f.blocks*uint64(pct), ok
}

// diskFreePct is the shadow file system's free space below which records
// are skipped (as the C daemon does).
const diskFreePct = 5

// diskGuard remembers whether records are held back for want of space.
type diskGuard struct {
	low      bool
	overflow bool   // the backlog went above --backlog in this episode
	held     int64  // the backlog at the last look
	skipped  uint64 // records skipped since low

	skippedAll uint64 // records skipped since start
}

// diskVerdict is what diskDecide tells the guard to do.
type diskVerdict int

const (
	diskKeep   diskVerdict = iota
	diskStop               // below diskFreePct: skip records from now on
	diskResume             // space again: copy, and say how many were skipped
)

func (v diskVerdict) String() string { return [...]string{"keep", "stop", "resume"}[v] }

// diskDecide compares the guard's state with a fresh look at the free space
// (ok false: the look failed, nothing changes).
func diskDecide(wasLow, low, ok bool) diskVerdict {
	switch {
	case !ok || low == wasLow:
		return diskKeep
	case low:
		return diskStop
	}
	return diskResume
}

// full records that a write found no space: holding starts now.
func (g *diskGuard) full() {
	g.low, g.overflow, g.held, g.skipped = true, false, 0, 0
}

// room records that there is room again: copying resumes.
func (g *diskGuard) room() { g.low = false }

// sawBacklog remembers the backlog at this look.
func (g *diskGuard) sawBacklog(n int64) { g.held = n }

// overflowed says, once an episode, that the backlog went above --backlog.
func (g *diskGuard) overflowed() bool {
	first := !g.overflow
	g.overflow = true
	return first
}

// skip counts n records skipped, in this episode and since start.
func (g *diskGuard) skip(n uint64) {
	g.skipped += n
	g.skippedAll += n
}

// checkDisk is the disk guard: it logs when skipping starts and ends.
func (d *daemon) checkDisk() {
	low, ok := freeBelow(d.sh.dir, diskFreePct)
	switch diskDecide(d.disk.low, low, ok) {
	case diskStop:
		d.disk.full()
		d.log.warnf("%s: less than %d%% of the file system free: keeping records in the source file (up to --backlog %d bytes)", shadowDir, diskFreePct, d.opts.backlog)
	case diskResume:
		d.disk.room()
		d.log.noticef("%s: space available again: copying the backlog, %d records skipped", shadowDir, d.disk.skipped)
	}
}

// hold keeps the backlog in the source files while the disk guard holds, up
// to --backlog bytes; beyond, the oldest records are skipped (skip). It
// switches files as pump does, so that skipped records free their space.
// Nothing is read meanwhile: a growing backlog tells the accounting watch
// that records arrive.
func (d *daemon) hold() error {
	held := d.src.backlog()
	if held > d.disk.held {
		d.recordsArrive()
	}
	if over := held - d.opts.backlog; over > 0 {
		if err := d.skip(over); err != nil {
			return err
		}
	}
	d.src.seenAll() // copied later, they are no news of accounting
	d.disk.sawBacklog(d.src.backlog())
	if !d.src.switching && d.rot.due(d.turn.now, d.src.off >= d.opts.sourceMax) {
		return d.beginRotation()
	}
	return nil
}

// skip consumes the oldest n bytes of the backlog without copying them: the
// records are counted as skipped, logged once an episode. Reaching the end
// of a switch's old file finishes the switch.
func (d *daemon) skip(n int64) error {
	size := int64(d.src.format.size)
	if d.disk.overflowed() {
		d.log.warnf("%s: backlog above --backlog %d bytes: skipping the oldest records", shadowDir, d.opts.backlog)
	}
	for n >= size {
		raw, _, err := d.src.read(n / size * size)
		if err != nil {
			return fail(exitFiles, err)
		}
		k := len(raw) / int(size)
		if d.src.switching {
			k = d.src.others(raw)
		}
		d.disk.skip(uint64(k))
		n -= int64(len(raw))
		if len(raw) == 0 {
			if !d.src.switching {
				return nil
			}
			if err := d.finishRotation(); err != nil {
				return err
			}
		}
	}
	return nil
}

// deliverAll delivers records that cannot stay in a source file (a
// previous daemon's, the start's early ones): what deliver holds back is
// skipped.
func (d *daemon) deliverAll(recs []byte) error {
	done, err := d.deliver(recs)
	d.disk.skip(uint64((len(recs) - done) / d.src.format.size))
	return err
}
