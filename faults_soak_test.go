//go:build faults

package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
)

// The soak: storms and clients coming and going for as long as SOAK says.

// TestSoak (make soak, not in CI; SOAK=10m by default): storms of 5,000
// exits back to back from one worker (about half of what the two cores can
// spawn) while up to 3 client processes come and go at random between
// storms. Every client attached for a whole storm must read every record of
// it; the daemon's RSS, open descriptors and goroutines must stay flat
// (printed every minute) from the first minute on, when every code path has
// run once and the executable's pages it needs are resident.
func TestSoak(t *testing.T) {
	bin := integration(t)
	length := 10 * time.Minute
	if s := os.Getenv("SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SOAK=%q: %v", s, err)
		}
		length = d
	}
	top := newTop(t)
	d := startDaemon(t, bin, top, "--gc-interval", "10s")
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var clients []*clientProc
	type sample struct{ rssKB, anonKB, fds, goroutines int }
	take := func() sample {
		fds, _ := os.ReadDir("/proc/" + strconv.Itoa(d.pid) + "/fd")
		s := sample{procKB(d.pid, "VmRSS"), procKB(d.pid, "RssAnon"), len(fds), statusNumber(statusOf(t, bin, top), "goroutines")}
		if s.rssKB < 0 || s.anonKB < 0 || s.goroutines < 0 {
			t.Fatalf("daemon figures missing: %+v", s)
		}
		return s
	}
	var base sample // after a minute (or 10 storms in a short run)
	start := time.Now()
	nextPrint := start
	storms, records, checked, lost, attaches := 0, 0, 0, 0, 0
	for time.Since(start) < length {
		if time.Now().After(nextPrint) {
			s := take()
			t.Logf("%3.0f min: RSS %d kB (anonymous %d), fds %d, goroutines %d; %d storms, %d records, %d client-storms checked, %d lost, %d attaches",
				time.Since(start).Minutes(), s.rssKB, s.anonKB, s.fds, s.goroutines, storms, records, checked, lost, attaches)
			if nextPrint.Sub(start) == time.Minute {
				base = s
			}
			nextPrint = nextPrint.Add(time.Minute)
		}
		// Clients come and go between storms.
		if len(clients) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(clients))
			clients[i].in.Close()
			clients[i].cmd.Wait()
			clients = slices.Delete(clients, i, i+1)
		}
		if len(clients) < 3 && rng.IntN(2) == 0 {
			p, line := startClient(t, top)
			if line != "attached" {
				t.Fatalf("client: %q", line)
			}
			clients = append(clients, p)
			attaches++
		}
		s := storm(t, 5000)
		if storms++; storms == 10 && base.rssKB == 0 {
			base = take()
		}
		records += len(s.pids)
		for _, p := range clients {
			lost += len(s.pids) - p.read(s)
			checked++
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
	}
	end, first := take(), base
	if lost != 0 {
		t.Errorf("%d records lost over %d client-storms", lost, checked)
	}
	if end.fds != first.fds || end.goroutines != first.goroutines || end.rssKB > first.rssKB*11/10 {
		t.Errorf("not flat: %+v at first, %+v at the end", first, end)
	}
	figure(t, "%s: %d storms, %d records, %d client attaches, %d client-storms checked, %d lost; from the first minute to the end: RSS %d → %d kB (anonymous %d → %d), fds %d → %d, goroutines %d → %d",
		length, storms, records, attaches, checked, lost, first.rssKB, end.rssKB, first.anonKB, end.anonKB, first.fds, end.fds, first.goroutines, end.goroutines)
}

// clientProc is a client process started by startClient.
type clientProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startClient starts a client process and returns it with its first line
// ("attached" or "refused: ..."); it is killed at cleanup.
func startClient(t *testing.T, top string) (*clientProc, string) {
	t.Helper()
	cmd := testCommand(os.Args[0], "-test.run=^$")
	cmd.Env = append(cmd.Env, clientEnv+"="+top)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := &clientProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	p.out.Scan()
	return p, p.out.Text()
}

// read asks the client how many records of s it has read, waiting for all.
func (p *clientProc) read(s stormRun) int {
	fmt.Fprintf(p.in, "%d %d\n", s.parent, len(s.pids))
	p.out.Scan()
	var n int
	fmt.Sscanf(p.out.Text(), "read %d", &n)
	return n
}
