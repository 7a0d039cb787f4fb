//go:build !linux || !cgo

package storage

// setCTrimThreshold: only glibc (Linux) is tuned; elsewhere the C heap
// keeps its allocator's defaults.
func setCTrimThreshold(int) cHeapResult { return cHeapNotGlibc }
