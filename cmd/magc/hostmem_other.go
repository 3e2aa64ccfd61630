//go:build !linux && !darwin

package main

// physicalMemory is the machine's RAM in bytes (0: unknown).
func physicalMemory() int64 { return 0 }
