//! How the pages under large, long-lived buffers (prepacked weights) are backed.
//!
//! Where the kernel's THP mode is `madvise` (the common default), memory is only backed by
//! 2 MiB pages if asked before it is first touched. Only the weight arena's regions ask (see
//! `weight_arena`): they hold a plan's many small operands, tens of MB at most. Large
//! buffers are mapped in 4 KiB pages with one call each. Huge pages everywhere made a
//! ResNet-50 load of ~150 MB of packed weights take 13 ms to map in at best but 280–340 ms
//! at worst on a VM right after another process freed its memory (a 2 MiB page the host has
//! to back anew), against 50–100 ms in 4 KiB pages; the run time did not differ.

#[cfg(target_os = "linux")]
use rayon::prelude::*;

/// Smaller ranges gain little from huge pages: one is 2 MiB, and only whole aligned ones
/// inside the range are advised.
const MIN_HUGE_BYTES: usize = 4 << 20;
/// Smaller buffers are left to fault in as they are written.
const MIN_POPULATE_BYTES: usize = 256 << 10;
/// Smaller shares of a range are not worth handing to another thread.
#[cfg(target_os = "linux")]
const MIN_PARALLEL_POPULATE_BYTES: usize = 4 << 20;

/// An empty vector with room for `capacity` floats whose pages are already mapped in: for a
/// large buffer that is about to be written whole, such as the copy of a misaligned weight.
/// `None` when the allocator refuses (no abort).
pub fn mapped_vec(capacity: usize) -> Option<Vec<f32>> {
    let mut v = Vec::<f32>::new();
    v.try_reserve_exact(capacity).ok()?;
    let bytes = v.capacity() * std::mem::size_of::<f32>();
    populate(v.as_mut_ptr().cast(), bytes);
    Some(v)
}

/// Asks for huge pages over the 2 MiB-aligned part of `bytes` bytes at `ptr`, memory the
/// caller owns and has not touched yet. Advisory: where huge pages are unavailable (other
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
///
/// Large ranges are split between the rayon pool's threads: the kernel zeroes and accounts
/// each page on the thread that faults it in, and that work scales with cores.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
pub(crate) fn populate(ptr: *mut u8, bytes: usize) {
    if bytes < MIN_POPULATE_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let threads = crate::parallel::threads().min(bytes / MIN_PARALLEL_POPULATE_BYTES);
        if threads <= 1 {
            // MADV_POPULATE_WRITE only maps the pages (as writing them would), never changes
            // their contents.
            madvise_inside(ptr, bytes, 4 << 10, libc::MADV_POPULATE_WRITE);
            return;
        }
        // Addresses, not pointers, cross threads. The parts are runs of whole pages, so no
        // page is left between two.
        const PAGE: usize = 4 << 10;
        let first = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + bytes) / PAGE * PAGE;
        let part = end
            .saturating_sub(first)
            .div_ceil(threads)
            .next_multiple_of(PAGE);
        crate::parallel::for_each((0..threads).into_par_iter(), |i| {
            let from = first + i * part;
            let len = part.min(end.saturating_sub(from));
            madvise_inside(from as *mut u8, len, PAGE, libc::MADV_POPULATE_WRITE);
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_populated_in_parts_hold_what_is_written() {
        // Three threads' parts of an odd-sized range (on Linux; elsewhere nothing is advised).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let n = 3 * (4 << 20) / 4 + 5;
        let mut v = pool.install(|| mapped_vec(n)).unwrap();
        assert!(v.capacity() >= n);
        v.extend((0..n).map(|i| i as f32));
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
    }
}
