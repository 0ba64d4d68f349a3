# CGO_ENABLED=0 everywhere: libcap's psx would otherwise switch to cgo silently.
export CGO_ENABLED := 0
# Go where its tarball installs it, when no other is on the PATH (sudo resets
# the PATH).
export PATH := $(PATH):/usr/local/go/bin

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
goflags = -trimpath -ldflags '-s -w -X main.version=$(1)'
GOFLAGS_BUILD := $(call goflags,$(VERSION))

.PHONY: all check check-busy test unit lint qemu test386 vm faults soak fuzz bench seccomp install uninstall unitdir deb cross clean

all: atopacctd

atopacctd: $(wildcard *.go) go.mod go.sum
	go build $(GOFLAGS_BUILD) -o $@ .

# Every test there is, as root, installing what the tests need first (the
# atop clients into .ci-cache): what CI runs (.ci/run). About 20 minutes.
check:
	bash .ci/check

# The fault suite beside a load (.ci/busy: both CPUs busy building Go code,
# and a loop of foreign exits), RUNS times (default 1); prints each run's
# wall time and result.
RUNS ?= 1
check-busy: atopacctd
	RUNS=$(RUNS) bash .ci/busy

# Every test: unit tests (no root needed) and the TestIntegration... tests,
# which need root and run one at a time (-p 1, no t.Parallel).
test: atopacctd
	go vet ./...
	go test -count=1 -p 1 -timeout 20m ./...

unit:
	go test -count=1 -short ./...

# gofmt, go vet and staticcheck under every build tag: each test-only tag
# alone (so that a helper only a tagged file uses shows as unused), and one
# architecture of each kind: 64-bit (sem_64bit.go), 32-bit (sem_32bit.go),
# and one without a seccomp program (zseccomp_none.go); the zseccomp_GOARCH
# files are generated data. staticcheck is installed at this version when
# missing (from the Go module proxy).
STATICCHECK_VERSION := v0.8.2
STATICCHECK ?= $(shell go env GOPATH)/bin/staticcheck
LINT_TAGS := '' faults bench
LINT_ARCHES := amd64 386 mips64
lint:
	test -x $(STATICCHECK) || go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@bad=$$(gofmt -l .); [ -z "$$bad" ] || { echo "gofmt -l: $$bad"; exit 1; }
	@for tags in $(LINT_TAGS); do for a in $(LINT_ARCHES); do \
		echo "go vet, staticcheck: GOARCH=$$a tags=$$tags"; \
		GOARCH=$$a go vet -tags "$$tags" . && GOARCH=$$a $(STATICCHECK) -tags "$$tags" . || exit 1; done; done

# The unit tests on other architectures under qemu-user (apt-get install
# qemu-user): arm64, and s390x (big-endian). Not 386: Go's 386 runtime
# crashes under Debian 12's qemu-i386 7.2 ("morestack on g0" in sysmon);
# the 386 lane of .ci/vm (make vm VMARCH=386) runs the unit tests, like
# every VM lane, and the integration tests on a real 32-bit kernel.
qemu:
	ATOPACCTD_REQUIRE_INTEGRATION= GOARCH=arm64 go test -exec qemu-aarch64 -count=1 -short .
	ATOPACCTD_REQUIRE_INTEGRATION= GOARCH=s390x go test -exec qemu-s390x -count=1 -short .

# The integration tests against a 386 daemon, natively on an amd64 kernel
# with IA-32 emulation (make check runs it where the kernel has it): the
# 32-bit system calls, in the log-mode seccomp soak too.
test386: atopacctd
	ATOPACCTD_TEST_GOARCH=386 go test -count=1 -p 1 -timeout 20m -run '^TestIntegration' .

# The sandbox and daemon integration tests on another architecture's own
# kernel, under qemu-system (.ci/vm: Debian's kernel and busybox for it).
VMARCH ?= arm64
vm:
	bash .ci/vm $(VMARCH)

# The fault suite (faults_*_test.go, build tag faults; root; CI runs it): one
# test per way the C daemon broke, each printing a FIGURE line. About 5
# minutes on a quiet machine of CI's kind, 25 beside make check-busy's load.
FAULTS_TIMEOUT ?= 20m
faults: atopacctd
	go test -tags faults -count=1 -p 1 -timeout $(FAULTS_TIMEOUT) -run '^TestFault' -v . > faults.log 2>&1; \
		s=$$?; grep -E '^(--- |ok|FAIL)|FIGURE|_test.go' faults.log; exit $$s

# The soak, not in CI: SOAK=10m by default.
SOAK ?= 10m
soak: atopacctd
	SOAK=$(SOAK) go test -tags faults -count=1 -p 1 -timeout 0 -run '^TestSoak$$' -v .

# Each parser fuzzed for FUZZTIME; the seed corpora run in make test.
FUZZTIME ?= 60s
fuzz:
	for f in FuzzCurrent FuzzParseFormat FuzzExitFilter FuzzParseArgs; do \
		go test -count=1 -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) . || exit 1; done

# The benchmark, never part of make test: needs root and strace; REF=/path/to/
# the C atopacctd (e.g. unpacked from Debian's atop package) runs it in
# alternation with ours. Writes docs/BENCHMARKS.md.
ROUNDS ?= 3
RECORDS ?= 200000
bench: atopacctd
	ROUNDS=$(ROUNDS) RECORDS=$(RECORDS) REF=$(REF) BENCH_OUT=docs/BENCHMARKS.md \
		go test -tags bench -count=1 -p 1 -run '^TestBench$$' -v -timeout 60m .
	echo '\n## Go micro-benchmarks\n\n```' >> docs/BENCHMARKS.md
	go test -count=1 -run '^$$' -bench . -benchmem . | tee -a docs/BENCHMARKS.md
	echo '```' >> docs/BENCHMARKS.md

# The seccomp programs the daemon carries (zseccomp_GOARCH.go), assembled by
# go-seccomp-bpf from the lists in sandbox.go; after changing a list. arm,
# arm64 and s390x run under qemu-user (apt-get install qemu-user): s390x
# because go-seccomp-bpf places argument words by the assembling machine's
# byte order.
seccomp:
	go test -count=1 -run '^TestSeccomp' . -update
	GOARCH=arm64 go test -exec qemu-aarch64 -count=1 -run '^TestSeccompFilter$$' . -update
	GOARCH=arm go test -exec qemu-arm -count=1 -run '^TestSeccompFilter$$' . -update
	GOARCH=s390x go test -exec qemu-s390x -count=1 -run '^TestSeccompOtherArches$$' . -update

# Installation, as a package would: DESTDIR, PREFIX, SBINDIR, MANDIR, UNITDIR.
# UNIT=init/notify/atopacct.service installs the Type=notify variant instead.
PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
# The unit directory the system's systemd names (/usr/lib/systemd/system on
# merged-/usr systems), else /lib/systemd/system.
UNITDIR ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
UNIT ?= init/atopacct.service
install: atopacctd
	install -D -m 0700 atopacctd $(DESTDIR)$(SBINDIR)/atopacctd
	install -D -m 0644 atopacctd.8 $(DESTDIR)$(MANDIR)/man8/atopacctd.8
	install -D -m 0644 $(UNIT) $(DESTDIR)$(UNITDIR)/atopacct.service

unitdir:
	@echo $(UNITDIR)

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/atopacctd $(DESTDIR)$(MANDIR)/man8/atopacctd.8 $(DESTDIR)$(UNITDIR)/atopacct.service

# A Debian package of this daemon (dpkg-deb alone: no network, no
# debhelper) that replaces atop's atopacctd, man page and unit by diverting
# them, and gives them back when removed: deb/ holds its control file and
# maintainer scripts. Into dist/; DEBVERSION sets its version.
DEBVERSION ?= 0~git$(shell git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || echo 0)
deb:
	mkdir -p dist
	go build $(call goflags,$(DEBVERSION)) -o dist/atopacctd .
	bash deb/build dist/atopacctd $(DEBVERSION) $(shell dpkg --print-architecture) $(UNITDIR)

# Static binaries for every architecture we ship, into dist/.
ARCHES ?= amd64 arm64 arm 386 riscv64 ppc64le s390x
cross:
	mkdir -p dist
	for a in $(ARCHES); do \
		GOARCH=$$a GOARM=7 go build $(GOFLAGS_BUILD) -o dist/atopacctd-linux-$$a . || exit 1; done
	file dist/atopacctd-linux-* | grep -v 'statically linked' && exit 1 || true
	ls -l dist

clean:
	rm -rf atopacctd dist
	go clean -testcache
