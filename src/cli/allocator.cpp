#include "commands.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace knflow::cli {

void tune_allocator_for_daemon() {
#if defined(__GLIBC__)
  // glibc raises its mmap threshold (128 KiB) each time a large mmapped block is freed, up to
  // 32 MiB: after a few LIST bodies of megabytes, large blocks (the caches' pool chunks among
  // them) come from the heap, between short-lived small blocks, and keep those pages from going
  // back to the system. A fixed threshold keeps every large block in its own mapping.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
}

void release_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace knflow::cli
