//go:build linux && cgo

package storage

/*
#include <malloc.h>

// convoice_trim_threshold sets glibc's M_TRIM_THRESHOLD: 1 when set, -1
// when glibc refused it, 0 when the C library is not glibc (musl has no
// such knob, and nothing to tune).
static int convoice_trim_threshold(int bytes) {
#ifdef __GLIBC__
	return mallopt(M_TRIM_THRESHOLD, bytes) == 1 ? 1 : -1;
#else
	(void)bytes;
	return 0;
#endif
}
*/
import "C"

// setCTrimThreshold sets how much freed memory at the top of a C heap
// glibc keeps before it gives it back to the kernel (setSQLiteCHeap).
func setCTrimThreshold(bytes int) cHeapResult {
	switch C.convoice_trim_threshold(C.int(bytes)) {
	case 1:
		return cHeapSet
	case 0:
		return cHeapNotGlibc
	}
	return cHeapRefused
}
