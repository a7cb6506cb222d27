//! The instruction sets the autovectorized kernels (direct-convolution rows and planes) are
//! compiled for, detected once per process. (The GEMM microkernels and the elementwise math
//! choose among their own, differently shaped, variants, each under the same `INFER_MAX_ISA`
//! ceiling, see [`x86_has`].)

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    // Never built on aarch64, where NEON is always there.
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

/// The best ISA this CPU runs: an arm other than `Portable` is returned only after its
/// features were detected, which is what makes calling its `#[target_feature]` code sound.
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(detect)
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if x86_has(X86Level::Avx512) {
            Isa::Avx512
        } else if x86_has(X86Level::Avx2) {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        Isa::Neon
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Isa::Portable
    }
}

/// The x86 instruction-set levels a kernel family can be held below.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum X86Level {
    Portable,
    Avx2,
    Avx512,
}

/// Whether kernels of `level` may be chosen: every family picks the best ISA the CPU has, unless
/// the environment variable `INFER_MAX_ISA` (`avx512`, `avx2` or `portable`, read once) holds it
/// lower, e.g. to compare the AVX2 and AVX-512 kernels on one machine or to rule one out when
/// chasing a numerical difference (the same idea as oneDNN's `ONEDNN_MAX_CPU_ISA`). An
/// unrecognised value is ignored.
#[cfg(target_arch = "x86_64")]
pub(crate) fn x86_allows(level: X86Level) -> bool {
    static CEILING: OnceLock<X86Level> = OnceLock::new();
    let ceiling = *CEILING.get_or_init(|| {
        match std::env::var("INFER_MAX_ISA")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "portable" => X86Level::Portable,
            "avx2" => X86Level::Avx2,
            _ => X86Level::Avx512,
        }
    });
    level <= ceiling
}

/// Whether this CPU runs `level` (AVX2 counted with FMA) and `INFER_MAX_ISA` allows it: the
/// one test every kernel family's run-time choice goes through.
#[cfg(target_arch = "x86_64")]
pub(crate) fn x86_has(level: X86Level) -> bool {
    x86_allows(level)
        && match level {
            X86Level::Portable => true,
            X86Level::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            X86Level::Avx512 => is_x86_feature_detected!("avx512f"),
        }
}

/// Whether the CPU is an Intel one (CPUID vendor "GenuineIntel"), detected once: a few
/// blocking choices measured opposite ways on Intel and AMD cores (see the GEMM driver).
pub(crate) fn is_intel() -> bool {
    static INTEL: OnceLock<bool> = OnceLock::new();
    *INTEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID is baseline on x86_64 and leaf 0 always exists.
            let id = std::arch::x86_64::__cpuid(0);
            // The vendor string is EBX, EDX, ECX: "Genu" "ineI" "ntel".
            [id.ebx, id.edx, id.ecx] == [0x756e_6547, 0x4965_6e69, 0x6c65_746e]
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}
