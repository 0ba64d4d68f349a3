package main

// The systemd units under a real systemd: systemd-nspawn(1) boots this
// machine's own root (an overlay over it, so nothing on the host changes)
// with the unit and the daemon bound in, and a check unit drives it with
// systemctl. The container has its own PID and IPC namespaces, so its
// accounting and semaphores are its own; it has no proc connector (events
// are sent to the initial PID namespace only), so the daemon polls.

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// systemdCheck runs in the container as atopacct-check.service. It writes
// what it sees as "key=value" lines to /out/facts for the test to judge, and
// the journal of the unit under test to /out/journal.
const systemdCheck = `#!/bin/sh
say() { echo "$1=$2" >> /out/facts; }
status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
main() { systemctl show -P MainPID atopacct.service; }

# Refused while acct.service (a stand-in here) is active.
systemctl start acct.service
systemctl start atopacct.service; say refused $?
systemctl stop acct.service
systemctl reset-failed atopacct.service

systemctl start atopacct.service; say start $?
say active "$(systemctl is-active atopacct.service)"
pid=$(main)
say mainpid "$pid"
say pidfile "$(cat /run/atopacctd.pid)"
say exe "$(readlink /proc/$pid/exe)"
for k in CapEff CapBnd NoNewPrivs Seccomp; do say $k "$(status $pid $k)"; done
say polling "$(atopacctd -s | grep -c polling)"

# The real clients, atop 2.8.1 and 2.13.0 (they differ across restarts:
# PROTOCOL.md), both attached at once. atops NAME INTERVAL SAMPLES starts
# them one after the other, each once the one before has written its first
# sample (an atop holds sem1 until its probe's record arrives, up to a poll
# interval here: another one registering meanwhile is refused and runs
# without accounting); seen KEY NAME waits for both to end and says what
# each saw of the processes named NAME, as KEY=N1 N2.
atops() {
	# Not while the daemon may take the lock to reset (after the clients
	# before): an atop registering then would run without accounting.
	for i in $(seq 50); do
		[ "$(echo /run/pacct_shadow.d/*.paf)" = /run/pacct_shadow.d/0000000000.paf ] &&
			[ ! -s /run/pacct_shadow.d/0000000000.paf ] && break
		sleep 0.1
	done
	for v in atop atop-new; do
		$v -w /tmp/$1.$v $2 $3 & eval "$(echo $v | tr - _)=\$!"
		for i in $(seq 100); do [ -s /tmp/$1.$v ] && break; sleep 0.1; done
	done
	cp /bin/true /tmp/$1
}
seen() {
	wait $atop $atop_new
	say $1 "$(for v in atop atop-new; do $v -r /tmp/$2.$v -P PRG | grep -c " ($2) E "; done | tr '\n' ' ')"
}
probes() { for i in 1 2 3 4 5 6 7 8 9 10; do /tmp/$1; done; }

# Each client sees the processes that exit between its samples.
atops acctprobe 1 3
probes acctprobe
seen atop acctprobe

# Restarted while atop reads (the daemon hands its files over to the next
# one): atop sees the processes before and after the restart.
atops restartprobe 2 4
probes restartprobe
sleep 1.5 # copied (the daemon polls here), not only written
# The gap: processes exit one after the other across the restart; those
# that no client sees exited while accounting was off. gapn holds the
# count and the loop's duration in microseconds.
cp /bin/true /tmp/gapprobe
(n=0; t=$(date +%s%N); while [ ! -e /tmp/gapstop ]; do /tmp/gapprobe; n=$((n+1)); done
	echo "$n $(( ($(date +%s%N) - t) / 1000 ))" > /tmp/gapn) & loop=$!
sleep 0.2
systemctl restart atopacct.service; say restart $?
sleep 0.2
touch /tmp/gapstop; wait $loop
probes restartprobe
seen readon restartprobe
say gap "$(atop -r /tmp/restartprobe.atop -P PRG | grep -c ' (gapprobe) E ') $(cat /tmp/gapn)"
pid=$(main)

# Reloaded (the forking unit: a new daemon takes over): nothing lost.
if [ "$(systemctl show -P CanReload atopacct.service)" = yes ]; then
	atops reloadprobe 2 4
	rm -f /tmp/gapstop
	(n=0; while [ ! -e /tmp/gapstop ]; do /tmp/reloadprobe; n=$((n+1)); done; echo "$n" > /tmp/reloadn) & loop=$!
	sleep 0.2
	systemctl reload atopacct.service; say reload $?
	sleep 0.2
	touch /tmp/gapstop; wait $loop
	seen reloaded reloadprobe
	say reloadexits "$(cat /tmp/reloadn)"
	new=$(main)
	say reloadpid "$( [ "$new" != "$pid" ] && [ "$new" = "$(cat /run/atopacctd.pid)" ] && echo new)"
	say reloadactive "$(systemctl is-active atopacct.service)"
	pid=$new
fi

# Restarted after SIGKILL while atop reads: the next daemon adopts the
# files and copies what the kernel wrote after the last copy (the probes
# exit right before the kill, mostly before the daemon's next poll).
atops killprobe 2 5
probes killprobe
systemctl kill -s KILL atopacct.service # systemd signals the unit's own processes
for i in $(seq 50); do
	sleep 0.2
	new=$(main)
	[ "$new" != 0 ] && [ "$new" != "$pid" ] && [ "$(systemctl is-active atopacct.service)" = active ] && break
done
say restarted "$( [ "$new" != 0 ] && [ "$new" != "$pid" ] && echo yes)"
probes killprobe
seen readkill killprobe

systemctl stop atopacct.service; say stop $?
say result "$(systemctl show -P Result atopacct.service)"
say left "$(ls -d /run/pacct* /run/atopacctd.pid 2>/dev/null | tr '\n' ' ')"
journal() { journalctl -b -u atopacct.service --no-pager "$@"; }
journal > /out/journal 2>&1
# Priorities reach the journal (the warning), and the journal's own
# name and pid are not repeated in the message.
say warned "$(journal -p warning -o cat | grep -c 'proc connector unavailable')"
say starts "$(journal -o cat | grep -c '^started ')"
say named "$(journal -o cat | grep -c '^atopacctd: ')"
`

// systemdUnits are the check unit and a stand-in acct.service.
var systemdUnits = map[string]string{
	"atopacct-check.service": `[Unit]
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/bin/sh /usr/local/sbin/atopacct-check
`,
	"acct.service": `[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
`,
}

func TestIntegrationSystemd(t *testing.T) {
	bin := integration(t)
	nspawn := tool(t, "NSPAWN", "systemd-nspawn", "apt-get install systemd-container")
	atop := tool(t, "ATOP", "atop", ".ci/run unpacks Debian's atop 2.8.1")
	atopNew := tool(t, "ATOP_NEW", "atop-2.13.0", ".ci/run unpacks Debian sid's atop 2.13.0")
	if arch := os.Getenv("ATOPACCTD_TEST_GOARCH"); arch != "" {
		t.Skipf("GOARCH=%s: SystemCallArchitectures=native refuses a foreign binary", arch)
	}
	for _, c := range []struct {
		unit   string
		nspawn []string // beyond bootSystemd's
		note   string   // in the journal, or none
		reload bool     // ExecReload: atopacctd --restart
	}{
		// A stock container: nspawn's seccomp filter refuses Landlock.
		{"init/atopacct.service", nil, "Landlock unavailable (operation not permitted)", true},
		// Landlock allowed: the whole sandbox under systemd's confinement.
		{"init/notify/atopacct.service", []string{"--system-call-filter=landlock_create_ruleset landlock_add_rule landlock_restrict_self"}, "", false},
	} {
		t.Run(filepath.Base(filepath.Dir(c.unit)), func(t *testing.T) {
			// atop 2.13.0's wrapper runs it from beside it: that folder
			// is bound at its own path.
			facts, journal := bootSystemd(t, nspawn, bin, c.unit, append(c.nspawn, "--bind-ro="+atop+":/usr/bin/atop",
				"--bind-ro="+atopNew+":/usr/bin/atop-new", "--bind-ro="+filepath.Dir(atopNew))...)
			if got := strings.Contains(journal, "Landlock unavailable"); got != (c.note != "") || !strings.Contains(journal, c.note) {
				t.Errorf("journal has a Landlock note: %v, want %q", got, c.note)
			}
			want := map[string]string{
				"refused": "1", "start": "0", "active": "active",
				"mainpid": facts["pidfile"], "exe": "/usr/sbin/atopacctd",
				"CapEff":     fmt.Sprintf("%016x", 1<<unix.CAP_SYS_PACCT),
				"CapBnd":     fmt.Sprintf("%016x", 1<<unix.CAP_SYS_PACCT),
				"NoNewPrivs": "1", "Seccomp": "2", "polling": "1",
				// Counts of atop 2.8.1 and 2.13.0.
				"atop": "10 10", "restart": "0", "readon": "20 20", "restarted": "yes", "readkill": "20 20", "named": "0",
				"stop": "0", "result": "success", "left": "",
				"warned": facts["starts"], // once per start
			}
			if c.reload {
				// Every process exiting one after the other across the
				// reload, seen by both atops.
				n := facts["reloadexits"]
				maps.Copy(want, map[string]string{"reload": "0", "reloaded": n + " " + n, "reloadpid": "new", "reloadactive": "active"})
				t.Logf("FIGURE %s: systemctl reload (atopacctd --restart): atop 2.8.1 and 2.13.0 saw %s of %s processes exiting one after the other across it", c.unit, facts["reloaded"], n)
			}
			var seen, exited, us float64
			if n, _ := fmt.Sscan(facts["gap"], &seen, &exited, &us); n != 3 || exited == 0 {
				t.Errorf("gap = %q, want seen, exited, microseconds", facts["gap"])
			} else {
				t.Logf("FIGURE %s: systemctl restart: atop 2.8.1 saw %.0f of %.0f processes exiting one after the other across it (%.0f/s): a gap of about %.1f ms",
					c.unit, seen, exited, exited/us*1e6, (exited-seen)/exited*us/1000)
			}
			for k, v := range want {
				if got, ok := facts[k]; !ok || got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if t.Failed() {
				t.Logf("facts: %v\njournal:\n%s", facts, journal)
			}
		})
	}
}

// bootSystemd boots systemd in a container with unit installed as
// atopacct.service and the daemon as /usr/sbin/atopacctd, runs the check and
// returns its facts and the unit's journal.
func bootSystemd(t *testing.T, nspawn, bin, unit string, extra ...string) (map[string]string, string) {
	dir, out := t.TempDir(), t.TempDir()
	var binds []string
	for name, text := range systemdUnits {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		binds = append(binds, "--bind-ro="+p+":/etc/systemd/system/"+name)
	}
	check := filepath.Join(dir, "check")
	if err := os.WriteFile(check, []byte(systemdCheck), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, _ = filepath.Abs(unit)
	root := filepath.Join(dir, "ov", "root")
	args := append([]string{
		"-m", "sh", "-ec",
		// An overlay over / with its upper layer in a tmpfs (it may not
		// lie on the lower layer's file system); the private mount
		// namespace of unshare(1) takes both away when the container ends.
		`mount -t tmpfs tmpfs "$1"; mkdir "$1/up" "$1/work" "$1/root"
		mount -t overlay overlay -o lowerdir=/,upperdir="$1/up",workdir="$1/work" "$1/root"
		shift; exec "$@"`, "sh", filepath.Dir(root),
		nspawn, "-D", root, "--keep-unit", "--register=no", "--link-journal=no",
		"--private-network", "--console=pipe", "--capability=CAP_SYS_PACCT",
		"--bind=" + out + ":/out",
		"--bind-ro=" + bin + ":/usr/sbin/atopacctd",
		"--bind-ro=" + unit + ":/etc/systemd/system/atopacct.service",
		"--bind-ro=" + check + ":/usr/local/sbin/atopacct-check",
	}, binds...)
	args = append(append(args, extra...), "-b", "systemd.unit=multi-user.target", "systemd.wants=atopacct-check.service")
	if err := os.Mkdir(filepath.Dir(root), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) } // nspawn powers the container off
	cmd.WaitDelay = 20 * time.Second
	console, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-nspawn: %v: %s", err, console)
	}
	facts := map[string]string{}
	f, err := os.Open(filepath.Join(out, "facts"))
	if err != nil {
		t.Fatalf("no facts from the check unit (%v); console:\n%s", err, console)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		k, v, _ := strings.Cut(sc.Text(), "=")
		facts[k] = strings.TrimSpace(v)
	}
	journal, _ := os.ReadFile(filepath.Join(out, "journal"))
	return facts, string(journal)
}
