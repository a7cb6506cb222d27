//! The per-core cache sizes that bound the GEMM's blocks: L1 data (the depth of a B
//! micro-panel, see `gemm::kernel::fit_to_l1`) and L2 (the blocks packed on the fly).
//!
//! Read once from Linux's sysfs (`/sys/devices/system/cpu/cpu0/cache/index*/`); elsewhere, or
//! when that is unreadable, conservative sizes (32 KiB and 512 KiB, the smallest of the x86
//! server cores we target). A hand-rolled read rather than a CPUID crate: a few small text
//! files cover Linux on every ISA, and a wrong guess only costs some speed.

use std::sync::OnceLock;

const FALLBACK_L1D_BYTES: usize = 32 << 10;
const FALLBACK_L2_BYTES: usize = 512 << 10;

/// Bytes of L1 data cache per core.
pub fn l1d_bytes() -> usize {
    static L1D: OnceLock<usize> = OnceLock::new();
    *L1D.get_or_init(|| detect(1).unwrap_or(FALLBACK_L1D_BYTES))
}

/// Bytes of L2 cache per core.
pub fn l2_bytes() -> usize {
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| detect(2).unwrap_or(FALLBACK_L2_BYTES))
}

/// The size of cpu0's data (or unified) cache of `level`.
fn detect(level: u8) -> Option<usize> {
    (0..8).find_map(|i| {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let found = std::fs::read_to_string(format!("{dir}/level")).ok()?;
        let kind = std::fs::read_to_string(format!("{dir}/type")).ok()?;
        if found.trim() != level.to_string() || kind.trim() == "Instruction" {
            return None;
        }
        parse_size(&std::fs::read_to_string(format!("{dir}/size")).ok()?)
    })
}

/// `"512K"`, `"1024K"`, `"2M"` → bytes; implausible sizes are rejected.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => return None,
    };
    let bytes = digits.parse::<usize>().ok()?.checked_mul(scale)?;
    (16 << 10..=64 << 20).contains(&bytes).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_implausible_ones_are_refused() {
        assert_eq!(parse_size("512K\n"), Some(512 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("4K"), None);
        assert_eq!(parse_size("12G"), None);
        assert_eq!(parse_size("x"), None);
        assert!(l1d_bytes() >= 16 << 10);
        assert!(l2_bytes() >= l1d_bytes());
    }
}
