package main

import (
	"testing"
	"unsafe"
)

// TestABILayout: the offsets the daemon reads are those of the kernel's
// structs (include/uapi/linux/acct.h, connector.h, cn_proc.h), counted by
// hand from the headers.
func TestABILayout(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want int
	}{
		{"acct_v3.ac_version", offVersion, 1},
		{"acct_v3.ac_pid", offV3Pid, 16},
		{"acct_v3.ac_ppid", offV3Ppid, 20},
		{"acct_v3.ac_btime", offV3Btime, 24},
		{"acct_v3.ac_comm", offV3Comm, 48},
		{"acct.ac_btime", offV2Btime, 8},
		{"acct.ac_comm", offV2Comm, 36},
		{"acct.ac_uid", int(unsafe.Offsetof(acctV2{}.uid)), 56},
		{"cn_msg.id.idx", offCnIdx, 16},
		{"cn_msg.id.val", offCnVal, 20},
		{"cn_msg.len", offCnLen, 32},
		{"proc_event.what", offWhat, 36},
		{"proc_event.event_data.exit.process_pid", offExitPid, 52},
		{"proc_event.event_data.exit.process_tgid", offExitTid, 56},
		{"exit message", exitMsgLen, 76},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %d, want %d", tt.got, tt.want)
			}
		})
	}
}
