//! Transparent huge pages for large buffers that live long and are read over and over
//! (prepacked weights).
//!
//! Where the kernel's THP mode is `madvise` (the common default), a buffer is only backed by
//! 2 MiB pages if asked before it is first touched. For ResNet-50's ~150 MB of packed weights
//! that turns tens of thousands of page faults at load into a few hundred, and the products
//! that stream those weights every run miss the TLB far less.

/// Smaller buffers gain little: a huge page is 2 MiB, and only whole aligned ones inside the
/// buffer are advised.
const MIN_BYTES: usize = 4 << 20;

/// Asks for huge pages over the 2 MiB-aligned part of `bytes` bytes at `ptr`, an allocation
/// the caller owns and has not touched yet. Advisory: where huge pages are unavailable (other
/// systems, THP off) nothing changes.
pub(crate) fn advise(ptr: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes < MIN_BYTES {
            return;
        }
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: `start..end` lies inside the caller's allocation; MADV_HUGEPAGE changes
            // only how the kernel backs those pages, never their contents. A failure (THP
            // disabled) leaves the range as it was, so the result is ignored.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// Smaller buffers are left to fault in as they are written.
const MIN_POPULATE_BYTES: usize = 256 << 10;

/// Faults in the whole pages of `bytes` bytes at `ptr` (an allocation the caller owns) in one
/// call, as the first writes would one page at a time: a trap per 4 KiB page is most of what
/// packing a CNN's weights costs at load, and more so under virtualization. Advisory: where
/// the call is unsupported (before Linux 5.14, other systems) the pages fault in as before.
pub(crate) fn populate(ptr: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4 << 10;
        if bytes < MIN_POPULATE_BYTES {
            return;
        }
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + bytes) / PAGE * PAGE;
        if end > start {
            // SAFETY: `start..end` lies inside the caller's allocation; MADV_POPULATE_WRITE
            // only maps its pages (as writing them would) and never changes their contents.
            // A failure leaves the range as it was, so the result is ignored.
            unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end - start,
                    libc::MADV_POPULATE_WRITE,
                )
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}
