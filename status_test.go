package main

import (
	"os"
	"strconv"
	"testing"
)

func TestStartTime(t *testing.T) {
	fields := " S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1000 1 "
	for _, tt := range []struct {
		name, stat string
		want       uint64
	}{
		{"plain", "42 (atopacctd)" + fields, 12345},
		{"a name with ') ('", "42 (a) (b 7 8)" + fields, 12345},
		{"cut short", "42 (atopacctd) S 1 1", 0},
		{"no name", "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := startTime([]byte(tt.stat)); got != tt.want {
				t.Errorf("startTime = %d, want %d", got, tt.want)
			}
		})
	}
	if self := procStart("self"); self == 0 || self != procStart(strconv.Itoa(os.Getpid())) {
		t.Errorf("procStart: self %d, by pid %d", self, procStart(strconv.Itoa(os.Getpid())))
	}
}
