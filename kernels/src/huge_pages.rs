//! How the pages under large, long-lived buffers (prepacked weights) are backed.
//!
//! Where the kernel's THP mode is `madvise` (the common default), a buffer is only backed by
//! 2 MiB pages if asked before it is first touched. For ResNet-50's ~150 MB of packed weights
//! that turns tens of thousands of page faults at load into a few hundred, and the products
//! that stream those weights every run miss the TLB far less. Buffers too small for that are
//! faulted in with one call instead of a trap per 4 KiB page.

/// Smaller buffers gain little from huge pages: one is 2 MiB, and only whole aligned ones
/// inside the buffer are advised.
const MIN_HUGE_BYTES: usize = 4 << 20;
/// Smaller buffers are left to fault in as they are written.
const MIN_POPULATE_BYTES: usize = 256 << 10;

/// An empty vector with room for `capacity` floats whose pages are already mapped in, on huge
/// pages where the buffer is large enough (see the module docs): for a large buffer that is
/// about to be written whole, such as the copy of a misaligned weight.
pub fn mapped_vec(capacity: usize) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(capacity);
    let bytes = v.capacity() * std::mem::size_of::<f32>();
    advise(v.as_mut_ptr().cast(), bytes);
    populate(v.as_mut_ptr().cast(), bytes);
    v
}

/// Asks for huge pages over the 2 MiB-aligned part of `bytes` bytes at `ptr`, an allocation
/// the caller owns and has not touched yet. Advisory: where huge pages are unavailable (other
/// systems, THP off) nothing changes.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
pub(crate) fn advise(ptr: *mut u8, bytes: usize) {
    if bytes >= MIN_HUGE_BYTES {
        // MADV_HUGEPAGE changes only how the kernel backs the pages, never their contents.
        #[cfg(target_os = "linux")]
        madvise_inside(ptr, bytes, 2 << 20, libc::MADV_HUGEPAGE);
    }
}

/// Faults in the whole pages of `bytes` bytes at `ptr` (an allocation the caller owns) in one
/// call, as the first writes would one page at a time: a trap per 4 KiB page is most of what
/// packing a CNN's weights costs at load, and more so under virtualization. Advisory: where
/// the call is unsupported (before Linux 5.14, other systems) the pages fault in as before.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
pub(crate) fn populate(ptr: *mut u8, bytes: usize) {
    if bytes >= MIN_POPULATE_BYTES {
        // MADV_POPULATE_WRITE only maps the pages (as writing them would), never changes
        // their contents.
        #[cfg(target_os = "linux")]
        madvise_inside(ptr, bytes, 4 << 10, libc::MADV_POPULATE_WRITE);
    }
}

/// `madvise(advice)` over the `align`-aligned part of `bytes` bytes at `ptr`, for advice that
/// leaves the contents alone. A failure leaves the range as it was, so it is ignored.
#[cfg(target_os = "linux")]
fn madvise_inside(ptr: *mut u8, bytes: usize, align: usize, advice: libc::c_int) {
    let start = (ptr as usize).next_multiple_of(align);
    let end = (ptr as usize + bytes) / align * align;
    if end > start {
        // SAFETY: `start..end` lies inside the caller's allocation, and the callers pass only
        // advice that never changes what the memory holds.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
    }
}
