//go:build faults || bench

package main

import (
	"fmt"
	"os"
)

// procKB reads "key: N kB" from /proc/PID/status; -1 when it has none.
func procKB(pid int, key string) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return statusNumber(string(b), key)
}
