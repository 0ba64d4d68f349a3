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
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

# The real clients, atop 2.8.1, 2.11.1 and 2.13.0 (they differ across
# restarts: docs/PROTOCOL.md), all attached at once. atops NAME INTERVAL SAMPLES starts
# them one after the other, each once the one before has written its first
# sample (an atop holds sem1 until its probe's record arrives, up to a poll
# interval here: another one registering meanwhile is refused and runs
# without accounting); seen KEY NAME waits for both to end and says what
# each saw of the processes named NAME, as KEY=N1 N2 N3.
atops() {
	# Not while the daemon may take the lock to reset (after the clients
	# before): an atop registering then would run without accounting.
	for i in $(seq 50); do
		[ "$(echo /run/pacct_shadow.d/*.paf)" = /run/pacct_shadow.d/0000000000.paf ] &&
			[ ! -s /run/pacct_shadow.d/0000000000.paf ] && break
		sleep 0.1
	done
	for v in atop atop-mid atop-new; do
		$v -w /tmp/$1.$v $2 $3 & eval "$(echo $v | tr - _)=\$!"
		for i in $(seq 100); do [ -s /tmp/$1.$v ] && break; sleep 0.1; done
	done
	cp /bin/true /tmp/$1
}
seen() {
	wait $atop $atop_mid $atop_new
	say $1 "$(for v in atop atop-mid atop-new; do $v -r /tmp/$2.$v -P PRG | grep -c " ($2) E "; done | tr '\n' ' ')"
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
	atop := tool(t, "ATOP", "atop", "make check unpacks Debian 12's atop 2.8.1")
	atopMid := tool(t, "ATOP_2_11", "atop-2.11.1", "make check unpacks Debian 13's atop 2.11.1")
	atopNew := tool(t, "ATOP_NEW", "atop-2.13.0", "make check unpacks Debian sid's atop 2.13.0")
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
			// The newer atops' wrappers run them from beside them: those
			// folders are bound at their own paths.
			facts, journal := bootSystemd(t, nspawn, bin, c.unit, append(c.nspawn, "--bind-ro="+atop+":/usr/bin/atop",
				"--bind-ro="+atopMid+":/usr/bin/atop-mid", "--bind-ro="+filepath.Dir(atopMid),
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
				// Counts of atop 2.8.1, 2.11.1 and 2.13.0.
				"atop": "10 10 10", "restart": "0", "readon": "20 20 20", "restarted": "yes", "readkill": "20 20 20", "named": "0",
				"stop": "0", "result": "success", "left": "",
				"warned": facts["starts"], // once per start
			}
			if c.reload {
				// Every process exiting one after the other across the
				// reload, seen by both atops.
				n := facts["reloadexits"]
				maps.Copy(want, map[string]string{"reload": "0", "reloaded": n + " " + n + " " + n, "reloadpid": "new", "reloadactive": "active"})
				t.Logf("FIGURE %s: systemctl reload (atopacctd --restart): atop 2.8.1, 2.11.1 and 2.13.0 saw %s of %s processes exiting one after the other across it", c.unit, facts["reloaded"], n)
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
	unit, _ = filepath.Abs(unit)
	return bootCheck(t, nspawn, systemdCheck, append([]string{
		"--bind-ro=" + bin + ":/usr/sbin/atopacctd",
		"--bind-ro=" + unit + ":/etc/systemd/system/atopacct.service",
	}, extra...)...)
}

// systemdBoot boots systemd with the check unit wanted.
var systemdBoot = []string{"-b", "systemd.unit=multi-user.target", "systemd.wants=atopacct-check.service"}

// bootCheck boots systemd in a container (an overlay of this machine's
// root) with extra nspawn options, runs checkScript as
// atopacct-check.service and returns the facts it said and the journal it
// left in /out/journal.
func bootCheck(t *testing.T, nspawn, checkScript string, extra ...string) (map[string]string, string) {
	return container(t, nspawn, checkScript, append(extra, systemdBoot...))
}

// container runs nspawn on an overlay of this machine's root with args
// (options, then what the container runs), checkScript at
// /usr/local/sbin/atopacct-check, and returns the facts the check said in
// /out/facts and what it left in /out/journal.
func container(t *testing.T, nspawn, checkScript string, args []string) (map[string]string, string) {
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
	if err := os.WriteFile(check, []byte(checkScript), 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "ov", "root")
	args = append(append([]string{
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
		"--bind-ro=" + check + ":/usr/local/sbin/atopacct-check",
	}, binds...), args...)
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

// debCheck runs in the container of TestIntegrationDeb: Debian's atop
// package installed with its services (atop logging every second), then
// this daemon's package (/pkgs/ours-1.deb), upgraded to a second build
// (/pkgs/ours-2.deb) while processes exit one after the other, removed and
// purged. It says what it sees as facts, as systemdCheck does.
const debCheck = `#!/bin/sh
say() { echo "$1=$2" >> /out/facts; }
main() { systemctl show -P MainPID atopacct.service; }
# Distinct pids (field 7): once seen in 11 where 10 ran, the daemon's copies
# unknown; "copied" counts what the shadow files hold.
seen() { atop -r /var/log/atop/atop_$(date +%Y%m%d) -P PRG | grep " ($1) E " | cut -d' ' -f7 | sort -u | wc -l; }
log() { "$@" >> /out/dpkg 2>&1; }
# A build machine's image may forbid maintainer scripts to start services;
# a system users install on does not.
rm -f /usr/sbin/policy-rc.d

log dpkg -i /pkgs/atop.deb; say atop $?
sed -i 's/^LOGINTERVAL=.*/LOGINTERVAL=1/' /etc/default/atop
systemctl restart atop.service
say before "$(atopacctd -v 2>&1 | head -1)"

log dpkg -i /pkgs/ours-1.deb; say install $?
say version "$(atopacctd -v) $(systemctl is-active atopacct.service) $(systemctl is-enabled atopacct.service)"
say diversions "$(dpkg-divert --list 'atopacctd-go' | wc -l)"
sleep 2 # atop's first sample
cp /bin/true /tmp/debprobe
for i in 1 2 3 4 5 6 7 8 9 10; do /tmp/debprobe; done
sleep 3
say seen "$(seen debprobe)"
say copied "$(cat /run/pacct_shadow.d/*.paf | grep -a -o debprobe | wc -l)"

# Upgraded while atop runs and processes exit one after the other.
cp /bin/true /tmp/upgradeprobe
(n=0; while [ ! -e /tmp/stop ]; do /tmp/upgradeprobe; n=$((n+1)); done; echo "$n" > /tmp/n) & loop=$!
sleep 0.5
pid=$(main)
log dpkg -i /pkgs/ours-2.deb; say upgrade $?
sleep 0.5
touch /tmp/stop; wait $loop
sleep 3
say upgraded "$(seen upgradeprobe) of $(cat /tmp/n)"
say version2 "$(atopacctd -v) $(systemctl is-active atopacct.service) $( [ "$(main)" != "$pid" ] && echo new)"

log dpkg -r atopacctd-go; say remove $?
log dpkg -P atopacctd-go; say purge $?
say diversions2 "$(dpkg-divert --list 'atopacctd-go' | wc -l)"
say owner "$(dpkg -S /usr/sbin/atopacctd /usr/share/man/man8/atopacctd.8.gz /lib/systemd/system/atopacct.service 2>&1 | tr '\n' ' ')"
say left "$(dpkg -L atopacctd-go 2>/dev/null | wc -l) $(ls -d /usr/share/doc/atopacctd-go /usr/share/lintian/overrides/atopacctd-go /usr/sbin/atopacctd.distrib /lib/systemd/system/atopacct.service.distrib 2>/dev/null | wc -l)"
say after "$(atopacctd -v 2>&1 | head -1) $(systemctl is-active atopacct.service)"
{ journalctl -b -u atopacct.service --no-pager; cat /out/dpkg; } > /out/journal 2>&1
`

// TestIntegrationDeb: make deb's package replaces Debian's atopacctd under
// a real systemd, as a user installs it: Debian's atop package (2.8.1, with
// its services) first, then ours; atop's logging service sees short-lived
// processes; an upgrade to a second build with atop running loses none of
// the processes exiting across it; remove and purge give Debian's files and
// daemon back and leave nothing of ours.
func TestIntegrationDeb(t *testing.T) {
	integration(t)
	nspawn := tool(t, "NSPAWN", "systemd-nspawn", "apt-get install systemd-container")
	atopDeb := tool(t, "ATOP_DEB", "atop.deb", "make check downloads Debian's atop package")
	if arch := os.Getenv("ATOPACCTD_TEST_GOARCH"); arch != "" {
		t.Skipf("GOARCH=%s: the package is built for this machine", arch)
	}
	pkgs := t.TempDir()
	for i, version := range []string{"1.0", "1.1"} {
		out, err := exec.Command("make", "-s", "--no-print-directory", "deb", "DEBVERSION="+version).CombinedOutput()
		if err != nil {
			t.Fatalf("make deb: %v: %s", err, out)
		}
		lines := strings.Fields(string(out)) // the package's name last
		if err := os.Rename(lines[len(lines)-1], filepath.Join(pkgs, fmt.Sprintf("ours-%d.deb", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	lintian := tool(t, "LINTIAN", "lintian", "apt-get install lintian")
	if out, err := exec.Command(lintian, "--fail-on", "error,warning", filepath.Join(pkgs, "ours-2.deb")).CombinedOutput(); err != nil {
		t.Errorf("lintian: %v:\n%s", err, out)
	}
	if out, err := exec.Command("cp", atopDeb, filepath.Join(pkgs, "atop.deb")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	facts, journal := bootCheck(t, nspawn, debCheck, "--bind-ro="+pkgs+":/pkgs")
	var seen, exited int
	fmt.Sscanf(facts["upgraded"], "%d of %d", &seen, &exited)
	want := map[string]string{
		"atop": "0", "install": "0", "version": "atopacctd 1.0 active enabled", "diversions": "3", "seen": "10", "copied": "10",
		"upgrade": "0", "version2": "atopacctd 1.1 active new",
		"remove": "0", "purge": "0", "diversions2": "0",
		"owner": "atop: /usr/sbin/atopacctd atop: /usr/share/man/man8/atopacctd.8.gz atop: /lib/systemd/system/atopacct.service",
		"left":  "0 0", "after": facts["before"] + " active",
	}
	if !strings.Contains(facts["before"], "2.8.1") {
		t.Errorf("before = %q, want Debian's atopacctd 2.8.1", facts["before"])
	}
	for k, v := range want {
		if got, ok := facts[k]; !ok || got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if exited == 0 || seen != exited {
		t.Errorf("upgraded = %q: want every process exiting across the upgrade seen by atop", facts["upgraded"])
	}
	t.Logf("FIGURE TestIntegrationDeb: atop 2.8.1's logging service saw %d of %d processes exiting one after the other across the package upgrade", seen, exited)
	if t.Failed() {
		t.Logf("facts: %v\njournal:\n%s", facts, journal)
	}
}

// openrcBoot is the container's first process for TestIntegrationOpenRC:
// it unpacks Debian's OpenRC, puts the check in the default runlevel and
// becomes OpenRC's own init.
const openrcBoot = `#!/bin/sh
set -e
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
for deb in /openrc/*.deb; do # /lib and /sbin stay symlinks (merged /usr)
	dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C /
done
mkdir -p /etc/runlevels/sysinit /etc/runlevels/boot /etc/runlevels/default /etc/runlevels/shutdown
ln -s /etc/init.d/localmount /etc/runlevels/boot/localmount
ln -s /etc/init.d/atopacct-check /etc/runlevels/default/atopacct-check
exec /sbin/openrc-init
`

// openrcServices are OpenRC services of the container: the check, and
// stand-ins for acct (the refusal) and localmount (the container's mounts
// are this machine's).
var openrcServices = map[string]string{
	"atopacct-check": `#!/sbin/openrc-run
description="TestIntegrationOpenRC's check"
start() {
	/bin/sh /usr/local/sbin/atopacct-check
	openrc-shutdown --poweroff now &
}
`,
	"acct": `#!/sbin/openrc-run
description="a stand-in for GNU acct's service"
start() { :; }
`,
	"localmount": `#!/sbin/openrc-run
description="a stand-in: the container's mounts are made"
start() { :; }
`,
}

// openrcCheck drives init/atopacct.openrc with rc-service under OpenRC's
// own init (refused while acct is started; start, status, restart,
// reload, stop), saying what it sees as facts, as systemdCheck does.
const openrcCheck = `#!/bin/sh
say() { echo "$1=$2" >> /out/facts; }
log() { "$@" >> /out/journal 2>&1; }
say init "$(readlink /proc/1/exe)"
say booted "$(rc-service localmount status >/dev/null && echo localmount)"

log rc-service acct start
log rc-service atopacct start; say refused $?
say why "$(grep -c 'acct is running: process accounting cannot serve both' /out/journal)"
log rc-service acct stop

log rc-service atopacct start; say start $?
log rc-service atopacct status; say status $?
pid=$(cat /run/atopacctd.pid)
say exe "$(readlink /proc/$pid/exe)"
say serving "$(atopacctd -s | grep -c "running (pid $pid)")"
log rc-service atopacct restart; say restart $?
new=$(cat /run/atopacctd.pid)
say restarted "$( [ "$new" != "$pid" ] && [ "$(readlink /proc/$new/exe)" = /usr/sbin/atopacctd ] && echo yes)"
pid=$new
log rc-service atopacct reload; say reload $?
new=$(cat /run/atopacctd.pid)
say reloaded "$( [ "$new" != "$pid" ] && [ "$(readlink /proc/$new/exe)" = /usr/sbin/atopacctd ] && echo yes)"
log rc-service atopacct stop; say stop $?
log rc-service atopacct status; say stopped $?
say left "$(ls -d /run/pacct* /run/atopacctd.pid 2>/dev/null | tr '\n' ' ')"
`

// TestIntegrationOpenRC: init/atopacct.openrc under real OpenRC (Debian's
// openrc, unpacked in a container whose first process is openrc-init):
// refused while acct is started, then start, status, restart, reload (a
// new daemon takes over: atopacctd --restart) and stop.
func TestIntegrationOpenRC(t *testing.T) {
	bin := integration(t)
	nspawn := tool(t, "NSPAWN", "systemd-nspawn", "apt-get install systemd-container")
	debs := tool(t, "OPENRC_DEBS", "openrc-debs", "make check downloads Debian's openrc and its libraries")
	if arch := os.Getenv("ATOPACCTD_TEST_GOARCH"); arch != "" {
		t.Skipf("GOARCH=%s: run natively only", arch)
	}
	dir := t.TempDir()
	script, _ := filepath.Abs("init/atopacct.openrc")
	args := []string{"--bind-ro=" + debs + ":/openrc", "--bind-ro=" + bin + ":/usr/sbin/atopacctd",
		"--bind-ro=" + script + ":/etc/init.d/atopacct"}
	for name, text := range map[string]string{"boot": openrcBoot, "atopacct-check": openrcServices["atopacct-check"],
		"acct": openrcServices["acct"], "localmount": openrcServices["localmount"]} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
		if name != "boot" {
			args = append(args, "--bind-ro="+p+":/etc/init.d/"+name)
		}
	}
	args = append(args, "--bind-ro="+filepath.Join(dir, "boot")+":/usr/local/sbin/openrc-boot", "/bin/sh", "/usr/local/sbin/openrc-boot")
	facts, log := container(t, nspawn, openrcCheck, args)
	want := map[string]string{
		"init": "/usr/sbin/openrc-init", "booted": "localmount", "refused": "1", "why": "1", "start": "0", "status": "0", "exe": "/usr/sbin/atopacctd",
		"serving": "1", "restart": "0", "restarted": "yes", "reload": "0", "reloaded": "yes", "stop": "0", "stopped": "3", "left": "",
	}
	for k, v := range want {
		if got, ok := facts[k]; !ok || got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if t.Failed() {
		t.Logf("facts: %v\nrc-service:\n%s", facts, log)
	}
}

// TestIntegrationInitScript runs init/atopacct.init under busybox: its ash,
// its start-stop-daemon and nothing else on the PATH.
func TestIntegrationInitScript(t *testing.T) {
	bin := integration(t)
	bb := tool(t, "BUSYBOX", "busybox", "apt-get install busybox")
	applets := t.TempDir()
	if out, err := exec.Command(bb, "--install", "-s", applets).CombinedOutput(); err != nil {
		t.Fatalf("busybox --install: %v: %s", err, out)
	}
	top := newTop(t)
	d := &daemonProc{top: top, pidfile: filepath.Join(t.TempDir(), "atopacctd.pid")}
	t.Cleanup(func() { d.stop(t, unix.SIGKILL) })
	victim := exec.Command("sleep", "600") // stands for an unrelated process
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Process.Kill(); victim.Wait() })
	script, _ := filepath.Abs("init/atopacct.init")
	run := func(action string) (string, int) {
		cmd := exec.Command(filepath.Join(applets, "sh"), script, action)
		cmd.Env = []string{"PATH=" + applets, "DAEMON=" + bin, "PIDFILE=" + d.pidfile, "TOPDIR=" + top}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)), cmd.ProcessState.ExitCode()
	}
	for _, step := range []struct {
		action, out string
		code        int
	}{
		{"start", "", 0},
		{"status", "atopacctd is running", 0},
		{"start", "already running", 0},
		{"stop", "", 0},
		{"status", "not running", 3},
		{"stop", "", 0},
		// A PID file left by a crash, naming a process that is not the
		// daemon (a storm recycles PIDs): never signalled, never taken for
		// the daemon.
		{"stale", "", 0},
		{"status", "not running", 3},
		{"stop", "", 0},
		{"restart", "", 0}, // none running: a start
		{"status", "atopacctd is running", 0},
		{"stop", "", 0},
		{"bogus", "usage:", 2},
	} {
		if step.action == "stale" {
			if err := os.WriteFile(d.pidfile, []byte(strconv.Itoa(victim.Process.Pid)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		out, code := run(step.action)
		if code != step.code || !strings.Contains(out, step.out) {
			t.Fatalf("%s: exit %d, %q; want %d and %q", step.action, code, out, step.code, step.out)
		}
		if (step.action == "start" || step.action == "restart") && d.pidfd == 0 {
			d.adopt(t, bin)
		}
		if step.action == "stop" && d.pidfd != 0 {
			// The script waits until the process runs no program any more
			// (/proc/PID/exe gone); its last threads may take a moment more.
			waitFor(t, time.Second, "the daemon's threads to exit after stop", d.exited)
			unix.Close(d.pidfd)
			d.pidfd = 0
			if names := topNames(t, top); len(names) != 0 {
				t.Errorf("top directory after stop holds %v", names)
			}
		}
	}
	// restart with a client registered: the next daemon takes over from the
	// running one (--restart) with accounting on throughout, so the client
	// reads every record once, in order, attached once.
	if out, code := run("start"); code != 0 {
		t.Fatalf("start: exit %d, %q", code, out)
	}
	d.adopt(t, bin)
	c := attached(t, top)
	wait := startStorm(t, 20000)
	waitRecords(t, c, 2000)
	replace := func() {
		if out, code := run("restart"); code != 0 {
			t.Fatalf("restart: exit %d, %q", code, out)
		}
		if !d.exited() {
			t.Error("the daemon restart replaced still runs")
		}
		unix.Close(d.pidfd)
		d.adopt(t, bin)
	}
	replace()
	r := wait(t)
	follow(t, c, r)
	t.Logf("FIGURE init script restart mid-storm: 0 of %d records lost or duplicated; client attached %d times", len(r.pids), c.attaches)
	if c.attaches != 1 {
		t.Errorf("client attached %d times across restart, want once", c.attaches)
	}
	c.detach()
	// The real clients read on across restart: every exit before and after.
	// They start once the daemon is client-less again: an atop registering
	// while it holds the lock to reset runs without accounting.
	waitFor(t, 10*time.Second, "the client-less reset", func() bool {
		exec.Command("/bin/true").Run() // wakes the daemon
		files := shadowFiles(t, top)
		return len(files) == 1 && files[0] == 0
	})
	atopsSeeAll(t, top, realAtops(t), replace)
	if out, code := run("stop"); code != 0 {
		t.Fatalf("stop: exit %d, %q", code, out)
	}

	// Our own child: a zombie, not reaped, if a signal killed it.
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", victim.Process.Pid))
	if _, state, _ := strings.Cut(string(stat), ") "); !strings.HasPrefix(state, "S") {
		t.Errorf("the process a stale PID file named is no longer sleeping: %q", stat)
	}
}
