//! One stretch of huge pages for the many small prepacked weights of a plan.
//!
//! A MobileNet's or EfficientNet's layers are mostly small, each faulted in 4 KiB at a time,
//! which made mapping pages in half of loading such a model. While a plan is built under an
//! [`ArenaScope`], operands under 4 MiB are instead carved one after another out of 16 MiB
//! regions advised for huge pages, and each carve's pages are mapped in with one call; larger
//! ones get a buffer of their own (see `huge_pages` for why those stay on 4 KiB pages).
//!
//! A region is freed when the last operand carved from it is dropped. Its untouched tail
//! costs address space only; at most the huge page under a region's last carve is resident
//! but unused. Elsewhere than Linux nothing is carved and every operand has its own buffer.

use std::cell::RefCell;
use std::sync::Arc;

/// Bytes per region.
const REGION_BYTES: usize = 16 << 20;
/// Operands this large or larger get their own buffer.
const MAX_CARVE_BYTES: usize = 4 << 20;
/// Smaller operands outside a scope are left to the allocator.
const MIN_OWN_MAPPING_BYTES: usize = 256 << 10;
/// Carves start on a cache line, as `AlignedBuf`'s buffers do.
const CARVE_ALIGN: usize = 64;

thread_local! {
    /// The region being carved on this thread, if a scope is open.
    static CURRENT: RefCell<Option<Cursor>> = const { RefCell::new(None) };
}

/// Where the next carve goes.
struct Cursor {
    region: Option<Arc<Region>>,
    /// Bytes of `region` carved so far.
    used: usize,
}

/// Carves this thread's prepacked operands from shared regions until dropped (restoring the
/// scope it replaced). Operands packed on other threads get buffers of their own.
pub struct ArenaScope(Option<Cursor>);

impl ArenaScope {
    pub fn enter() -> ArenaScope {
        let fresh = Cursor {
            region: None,
            used: 0,
        };
        ArenaScope(CURRENT.with(|c| c.replace(Some(fresh))))
    }
}

impl Drop for ArenaScope {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// `len` zeroed floats carved from the current scope's region, its pages mapped in; `None`
/// when no scope is open, the request is large enough for a buffer of its own, or no region
/// can be mapped.
pub(crate) fn carve(len: usize) -> Option<Carved> {
    let bytes = len.checked_mul(4)?.next_multiple_of(CARVE_ALIGN);
    if bytes == 0 || bytes >= MAX_CARVE_BYTES {
        return None;
    }
    CURRENT.with(|c| {
        let mut cursor = c.borrow_mut();
        let cursor = cursor.as_mut()?;
        let region = match &cursor.region {
            Some(region) if cursor.used + bytes <= REGION_BYTES => region.clone(),
            _ => {
                let region = Arc::new(Region::map(REGION_BYTES, true)?);
                cursor.region = Some(region.clone());
                cursor.used = 0;
                region
            }
        };
        let start = cursor.used;
        cursor.used += bytes;
        // SAFETY: `start..start + bytes` lies inside the region (checked above) and is handed
        // out once: the cursor moves past it.
        let ptr = unsafe { region.base.add(start) };
        crate::huge_pages::populate(ptr, bytes);
        Some(Carved {
            _region: region,
            ptr: ptr.cast(),
            len,
        })
    })
}

/// `len` zeroed floats in a mapping of their own, its pages mapped in with one call, for a
/// large prepacked operand (in a scope or not). The OS hands the pages out zeroed, so unlike a
/// vector's nothing has to write them first: that fill was an eighth of a ResNet-50's load.
/// `None` for small operands (a mapping per few KiB would cost more than it saves) and
/// where nothing can be mapped (other systems than Linux, no memory).
pub(crate) fn own_mapping(len: usize) -> Option<Carved> {
    let bytes = len.checked_mul(4)?;
    if bytes < MIN_OWN_MAPPING_BYTES {
        return None;
    }
    let region = Region::map(bytes, false)?;
    crate::huge_pages::populate(region.base, bytes);
    let ptr = region.base.cast();
    Some(Carved {
        _region: Arc::new(region),
        ptr,
        len,
    })
}

/// An anonymous mapping (zeroed by the OS); a carving region is 2 MiB-aligned and advised for
/// huge pages.
struct Region {
    /// The mapping as made (with slack for the alignment), for `munmap`.
    mapped: *mut u8,
    mapped_bytes: usize,
    /// The aligned start of the usable bytes.
    base: *mut u8,
}

// SAFETY: a region is plain memory owned by this value; the carves made from it are disjoint
// and each is accessed only through its `Carved` (see there).
unsafe impl Send for Region {}
// SAFETY: as for `Send`: `Region` itself is never read or written through `&Region`.
unsafe impl Sync for Region {}

impl Region {
    /// `bytes` usable bytes; `huge`: 2 MiB-aligned and advised for huge pages.
    #[cfg(target_os = "linux")]
    fn map(bytes: usize, huge: bool) -> Option<Region> {
        const HUGE: usize = 2 << 20;
        let mapped_bytes = bytes.checked_add(if huge { HUGE } else { 0 })?;
        // SAFETY: a fresh private anonymous mapping: no existing memory is touched.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return None;
        }
        let mapped = mapped.cast::<u8>();
        if !huge {
            return Some(Region {
                mapped,
                mapped_bytes,
                base: mapped,
            });
        }
        let offset = (mapped as usize).next_multiple_of(HUGE) - mapped as usize;
        // SAFETY: `offset < HUGE`, so `base..base + bytes` lies inside the mapping.
        let base = unsafe { mapped.add(offset) };
        crate::huge_pages::advise(base, bytes);
        Some(Region {
            mapped,
            mapped_bytes,
            base,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn map(_bytes: usize, _huge: bool) -> Option<Region> {
        None
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: the mapping made in `map`, unmapped once; every carve holds an `Arc` of this
        // region, so none is left to read it.
        unsafe {
            libc::munmap(self.mapped.cast(), self.mapped_bytes);
        }
    }
}

/// `len` floats of a region, owned alone by this value.
pub(crate) struct Carved {
    /// Keeps the memory mapped.
    _region: Arc<Region>,
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the floats are reached only through this value (`&self` reads, `&mut self` writes),
// so they follow Rust's usual aliasing rules, as a `Vec<f32>`'s would.
unsafe impl Send for Carved {}
// SAFETY: as for `Send`.
unsafe impl Sync for Carved {}

impl Carved {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `ptr..ptr + len` is this carve's range of a live mapping (zeroed by the OS,
        // so initialized), aligned for f32, and no `&mut` to it can exist while `&self` does.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_are_zeroed_disjoint_and_only_made_in_a_scope() {
        assert!(carve(100).is_none(), "no scope open");
        let scope = ArenaScope::enter();
        if cfg!(not(target_os = "linux")) {
            assert!(carve(100).is_none());
            return;
        }
        // Enough carves to fill a region and start the next.
        let three_mib = (3 << 20) / 4;
        let sizes = [
            100, 5, three_mib, three_mib, 1, three_mib, three_mib, three_mib, 17, three_mib, 0,
        ];
        let mut carves: Vec<Carved> = sizes.iter().filter_map(|&n| carve(n)).collect();
        assert_eq!(carves.len(), sizes.len() - 1, "all but the empty one");
        for (i, c) in carves.iter_mut().enumerate() {
            assert!(c.as_slice().iter().all(|&x| x == 0.0));
            assert_eq!(c.as_slice().as_ptr() as usize % CARVE_ALIGN, 0);
            c.as_mut_slice().fill(i as f32 + 1.0);
        }
        for (i, c) in carves.iter().enumerate() {
            assert!(
                c.as_slice().iter().all(|&x| x == i as f32 + 1.0),
                "carve {i}"
            );
        }
        assert!(
            carve(MAX_CARVE_BYTES / 4).is_none(),
            "large: a buffer of its own"
        );
        drop(scope);
        assert!(carve(100).is_none(), "scope closed");
        // The carves outlive the scope.
        assert_eq!(carves[0].as_slice()[99], 1.0);
    }

    #[test]
    fn large_operands_get_zeroed_mappings_of_their_own() {
        assert!(own_mapping(100).is_none(), "small: left to the allocator");
        if cfg!(not(target_os = "linux")) {
            return;
        }
        let len = MAX_CARVE_BYTES / 4 + 3;
        let (mut a, mut b) = (own_mapping(len).unwrap(), own_mapping(len).unwrap());
        for (m, v) in [(&mut a, 1.0), (&mut b, 2.0)] {
            assert_eq!(m.len(), len);
            assert_eq!(m.as_slice().as_ptr() as usize % CARVE_ALIGN, 0);
            assert!(m.as_slice().iter().all(|&x| x == 0.0));
            m.as_mut_slice().fill(v);
        }
        assert!(a.as_slice().iter().all(|&x| x == 1.0));
        assert!(b.as_slice().iter().all(|&x| x == 2.0));
    }
}
