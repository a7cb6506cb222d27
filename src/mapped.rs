//! Memory-mapped model files, shared by the tensors that view them.

// Loaders read bytes from strangers: a malformed file must be an error, never a panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use crate::error::{Error, Result};
use memmap2::{Mmap, UncheckedAdvice};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// A read-only file mapping. Tensors hold `bytes::Bytes` slices of it; this handle lets the
/// planner hand resident pages back to the OS once weights have been prepacked.
#[derive(Clone, Debug)]
pub struct MappedFile(Arc<Mmap>);

/// Lets `bytes::Bytes` own a shared mapping.
struct Owner(Arc<Mmap>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl MappedFile {
    /// Maps `file` (opened from `path`, used in errors) and returns the mapping's bytes.
    pub fn map(file: &File, path: &Path) -> Result<(MappedFile, bytes::Bytes)> {
        // SAFETY: read-only map; the model file must not be modified or truncated while it is
        // loaded (the contract of every mmap-based model loader).
        let map = unsafe { Mmap::map(file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let map = Arc::new(map);
        let bytes = bytes::Bytes::from_owner(Owner(Arc::clone(&map)));
        Ok((MappedFile(map), bytes))
    }

    /// Drops the resident pages lying wholly inside `bytes`, if `bytes` is part of this
    /// mapping (anything else is left alone).
    pub fn release_range(&self, bytes: &[u8]) {
        let base = self.0.as_ptr() as usize;
        let (start, end) = (
            bytes.as_ptr() as usize,
            bytes.as_ptr() as usize + bytes.len(),
        );
        if start < base || end > base + self.0.len() {
            return;
        }
        let page = page_size();
        let first = (start - base).div_ceil(page) * page;
        let last = (end - base) / page * page;
        if last > first {
            // SAFETY: as in `release_resident_pages`; the range lies inside the mapping.
            let _ = unsafe {
                self.0
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, first, last - first)
            };
        }
    }

    /// Drops the mapping's resident pages; later reads fault them back in from the file.
    ///
    /// Called after planning: the pages read while prepacking weights would otherwise stay
    /// resident next to their packed copies, doubling the weights' memory.
    pub fn release_resident_pages(&self) {
        // SAFETY: the mapping is private and read-only, so MADV_DONTNEED discards no data: the
        // next access re-reads the same bytes from the (unmodified, see `map`) file. No
        // reference into the mapping is invalidated; only page-table entries are dropped.
        let _ = unsafe { self.0.unchecked_advise(UncheckedAdvice::DontNeed) };
    }
}

/// The OS page size (mappings are page-aligned; advice ranges must be too).
fn page_size() -> usize {
    // 4 KiB on every platform we build for, and a safe multiple-free choice elsewhere: a
    // larger real page only makes `release_range` skip partial pages.
    4096
}
