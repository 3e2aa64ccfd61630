//go:build !linux && !darwin

package main

// physicalMemory is the machine's RAM in bytes (0: unknown).
func osPhysicalMemory() int64 { return 0 }
