package main

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	def := options{top: "/run", topArg: -1, pidfile: "/run/atopacctd.pid", records: 10000, sourceMax: 1 << 20, backlog: 4 << 20,
		gcInterval: time.Minute, poll: time.Second, reclaim: time.Hour}
	with := func(f func(*options)) options { o := def; f(&o); return o }
	for _, tt := range []struct {
		name string
		args []string
		want options
		err  string // part of the error line naming the argument
	}{
		{"none", nil, def, ""},
		{"compatible top", []string{"/var/run"}, with(func(o *options) { o.top, o.topArg = "/var/run", 0 }), ""},
		{"-v", []string{"-v"}, with(func(o *options) { o.version = true }), ""},
		{"-V", []string{"-V"}, with(func(o *options) { o.version = true }), ""},
		{"--version", []string{"--version"}, with(func(o *options) { o.version = true }), ""},
		{"foreground status help", []string{"-f", "--status", "-h"}, with(func(o *options) { o.foreground, o.status, o.help = true, true, true }), ""},
		{"values", []string{"--pidfile", "", "--records=1000", "--source-max", "4096", "--gc-interval", "2s", "--poll=250ms", "--backlog", "640", "/top"},
			with(func(o *options) {
				o.pidfile, o.records, o.sourceMax, o.gcInterval, o.poll, o.backlog, o.top, o.topArg = "", 1000, 4096, 2*time.Second, 250*time.Millisecond, 640, "/top", 10
			}), ""},
		{"restart", []string{"--restart"}, with(func(o *options) { o.restart = true }), ""},
		{"backlog 0", []string{"--backlog", "0"}, def, `--backlog: "0" is not a positive integer`},
		{"top before options", []string{"/top", "-f"}, with(func(o *options) { o.top, o.topArg, o.foreground = "/top", 0, true }), ""},
		{"after --", []string{"--", "-odd"}, with(func(o *options) { o.top, o.topArg = "-odd", 1 }), ""},
		{"unknown", []string{"--bogus"}, def, "--bogus: unknown option"},
		{"unknown short", []string{"-x"}, def, "-x: unknown option"},
		{"two tops", []string{"/a", "/b"}, def, "/b: only one top directory"},
		{"empty top", []string{""}, def, `"": an empty top directory`},
		{"control characters", []string{"--bad\nname"}, def, `"--bad\nname": unknown option`},
		{"records 0", []string{"--records", "0"}, def, `--records: "0" is not a positive integer`},
		{"records word", []string{"--records=many"}, def, `--records: "many"`},
		{"source-max negative", []string{"--source-max", "-5"}, def, "--source-max:"},
		{"bad duration", []string{"--gc-interval", "soon"}, def, `--gc-interval: "soon" is not a positive duration`},
		{"zero poll", []string{"--poll", "0s"}, def, "--poll:"},
		{"reclaim", []string{"--reclaim=90s"}, with(func(o *options) { o.reclaim = 90 * time.Second }), ""},
		{"reclaim never", []string{"--reclaim", "0"}, with(func(o *options) { o.reclaim = 0 }), ""},
		{"reclaim negative", []string{"--reclaim", "-1s"}, def, `--reclaim: "-1s" is not a positive duration`},
		{"missing value", []string{"--records"}, def, "--records: needs a value"},
		{"no-sandbox", []string{"--no-sandbox"}, with(func(o *options) { o.noSandbox = true }), ""},
		{"value on a flag", []string{"--foreground=yes"}, def, "--foreground: takes no value"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("got error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestRunUsage(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"-v"}, exitOK, "atopacctd " + version, ""},
		{[]string{"--help"}, exitOK, "--gc-interval DURATION", ""},
		{[]string{"--records", "0"}, exitUsage, "", "usage: atopacctd"},
		{[]string{"-s", "/nonexistent-top"}, 1, "daemon: not running", ""},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("got %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errb.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// FuzzParseArgs: arguments separated by NUL. Whatever they are, an error is
// one line naming an argument, and what is accepted is usable.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{"", "/run", "-v", "--records\x001000\x00/top", "--poll=0s", "--reclaim\x000",
		"-f\x00--pidfile\x00\x00/x", "--\x00-odd", "/a\x00/b", "--bogus\nx", "\x00", "--records=\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var args []string
		if s != "" {
			args = strings.Split(s, "\x00")
		}
		o, err := parseArgs(args)
		if err != nil {
			msg := err.Error()
			named := slices.ContainsFunc(args, func(a string) bool {
				name, _, _ := strings.Cut(a, "=")
				return strings.HasPrefix(msg, shown(name)+":") || strings.HasPrefix(msg, shown(a)+":")
			})
			if strings.ContainsAny(msg, "\n\r") || !named {
				t.Errorf("parseArgs(%q): error %q is not one line naming an argument", args, msg)
			}
			return
		}
		if o.records <= 0 || o.sourceMax <= 0 || o.gcInterval <= 0 || o.poll <= 0 || o.reclaim < 0 || o.top == "" {
			t.Errorf("parseArgs(%q) accepted %+v", args, o)
		}
	})
}

// optionRE finds the option names at the start of an options list's lines.
var optionRE = regexp.MustCompile(`(?m)^  (-[-\w]+(?:, -[-\w]+)*)`)

// helpOptions are the options the help text lists, in its order.
func helpOptions(text string) []string {
	var names []string
	for _, m := range optionRE.FindAllStringSubmatch(text, -1) {
		names = append(names, strings.Split(m[1], ", ")...)
	}
	return names
}

// TestOptionsDocumented: the help text is the one list of options. Each one
// it lists parses; the README's "Command line" block is the help text's
// options list, line for line; the man page's OPTIONS section names the
// same options.
func TestOptionsDocumented(t *testing.T) {
	want := helpOptions(helpText)
	if len(want) < 10 {
		t.Fatalf("help text lists %d options: %q", len(want), want)
	}
	for _, name := range want {
		args := []string{name}
		if takesValue(name) {
			args = append(args, "1")
		}
		_, err := parseArgs(args)
		if err != nil && takesValue(name) {
			_, err = parseArgs([]string{name, "1s"}) // a duration
		}
		if err != nil {
			t.Errorf("help text lists %s, which does not parse: %v", name, err)
		}
	}

	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(readme), "## Command line\n\n```\n")
	block, _, _ = strings.Cut(block, "```")
	_, helpList, _ := strings.Cut(helpText, "\n  -")
	helpList, _, _ = strings.Cut("  -"+helpList, "\n\n")
	_, readmeList, _ := strings.Cut(block, "\n  -")
	readmeList = strings.TrimSuffix("  -"+readmeList, "\n")
	if readmeList != helpList {
		t.Errorf("README.md's Command line block differs from the help text's options:\n%s\nwant:\n%s", readmeList, helpList)
	}

	man, err := os.ReadFile("atopacctd.8")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(man), ".SH OPTIONS\n")
	section, _, _ = strings.Cut(section, "\n.SH ")
	var got []string
	for _, line := range strings.Split("\n"+section, "\n.TP\n")[1:] {
		head, _, _ := strings.Cut(line, "\n")
		for _, f := range strings.Fields(strings.ReplaceAll(head, `\-`, "-")) {
			if f = strings.Trim(f, `",`); strings.HasPrefix(f, "-") {
				got = append(got, f)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("atopacctd.8 OPTIONS lists %q; the help text %q", got, want)
	}
}
