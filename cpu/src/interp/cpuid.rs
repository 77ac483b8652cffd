//! CPUID: the processor Umbra's interpreter presents.
//!
//! One consistent feature set: everything advertised is implemented, and an instruction whose
//! feature is not advertised raises #UD. The table grows as the interpreter does. The local
//! APIC advertised is the machine's (`umbra_devices::lapic`, at 0xfee00000), and leaf 0x15
//! gives the TSC rate against that APIC's timer clock.

use iced_x86::CpuidFeature;

/// The processor signature (CPUID.1:EAX): family 6, model 0x3d (a Broadwell-class core),
/// stepping 4. The reset value of EDX as well.
pub const SIGNATURE: u32 = 0x0003_06d4;

/// The vendor string, as EBX, EDX, ECX of leaf 0.
const VENDOR: &[u8; 12] = b"GenuineIntel";

/// The brand string of leaves 0x8000_0002..=0x8000_0004 (48 bytes, NUL-padded).
const BRAND: &[u8; 48] =
    b"Umbra virtual CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// CPUID.1:EDX bits advertised.
mod leaf1_edx {
    pub const FPU: u32 = 1 << 0;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const APIC: u32 = 1 << 9;
    pub const SEP: u32 = 1 << 11;
    pub const PGE: u32 = 1 << 13;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
    pub const PSE36: u32 = 1 << 17;
    pub const CLFSH: u32 = 1 << 19;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
    pub const ALL: u32 = FPU
        | PSE
        | TSC
        | MSR
        | PAE
        | CX8
        | APIC
        | SEP
        | PGE
        | CMOV
        | PAT
        | PSE36
        | CLFSH
        | MMX
        | FXSR
        | SSE
        | SSE2;
}

/// CPUID.1:ECX bits advertised.
mod leaf1_ecx {
    pub const PCID: u32 = 1 << 17;
    pub const CX16: u32 = 1 << 13;
    pub const MOVBE: u32 = 1 << 22;
    pub const POPCNT: u32 = 1 << 23;
    pub const HYPERVISOR: u32 = 1 << 31;
    pub const ALL: u32 = CX16 | PCID | MOVBE | POPCNT | HYPERVISOR;
    pub const SSE3: u32 = 1 << 0;
    pub const SSSE3: u32 = 1 << 9;
    pub const SSE4_1: u32 = 1 << 19;
    pub const SSE4_2: u32 = 1 << 20;

    /// The SSE extensions beyond SSE2, which the interpreter implements by running their
    /// instructions on the host: advertised only where the host has them.
    pub fn sse_extensions() -> u32 {
        use std::arch::is_x86_feature_detected as has;
        static EXTENSIONS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        *EXTENSIONS.get_or_init(|| {
            [
                (has!("sse3"), SSE3),
                (has!("ssse3"), SSSE3),
                (has!("sse4.1"), SSE4_1),
                (has!("sse4.2"), SSE4_2),
            ]
            .iter()
            .filter(|(present, _)| *present)
            .fold(0, |bits, (_, bit)| bits | bit)
        })
    }
}

/// CPUID.7.0 bits advertised.
mod leaf7 {
    pub const EBX_SMEP: u32 = 1 << 7;
    pub const EBX_INVPCID: u32 = 1 << 10;
    pub const EBX_SMAP: u32 = 1 << 20;
    pub const ECX_RDPID: u32 = 1 << 22;
    /// IA32_ARCH_CAPABILITIES exists (`super::super::msr::ARCH_CAPABILITIES`).
    pub const EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
}

/// CPUID.8000_0001 bits advertised.
mod ext1 {
    pub const ECX_LAHF_LM: u32 = 1 << 0;
    pub const ECX_ABM: u32 = 1 << 5;
    pub const EDX_SYSCALL: u32 = 1 << 11;
    pub const EDX_NX: u32 = 1 << 20;
    pub const EDX_PAGE1GB: u32 = 1 << 26;
    pub const EDX_RDTSCP: u32 = 1 << 27;
    pub const EDX_LM: u32 = 1 << 29;
}

/// The highest basic leaf: 0x16, the processor's frequency.
const MAX_BASIC_LEAF: u32 = 0x16;

/// The crystal clock leaf 0x15 reports: the local APIC timer's 1 GHz bus clock (see
/// `umbra_devices::lapic`), which Linux takes it to be when it sets the APIC timer's period
/// from this leaf.
const CRYSTAL_HZ: u64 = 1_000_000_000;

/// Leaf 0x15: ECX the crystal's rate in Hz, and EBX / EAX the ratio of the time-stamp
/// counter to it, so that ECX * EBX / EAX is the host's TSC rate, at which the guest's TSC
/// ticks (a kernel need not calibrate it against a timer, and trusts it as known).
///
/// Linux computes the TSC rate as `crystal kHz * EBX / EAX` in 32-bit arithmetic, so EBX
/// stays below 2^32 / (crystal kHz) = 4294; the ratio is the closest fraction with such a
/// numerator (for a 2.6 GHz TSC, within a fraction of a ppm). Computed once per process.
fn tsc_leaf() -> [u32; 4] {
    static LEAF: std::sync::OnceLock<[u32; 4]> = std::sync::OnceLock::new();
    *LEAF.get_or_init(|| {
        let (numerator, denominator) =
            closest_ratio(super::msr::host_tsc_hz(), CRYSTAL_HZ, LINUX_MAX_NUMERATOR);
        [denominator as u32, numerator as u32, CRYSTAL_HZ as u32, 0]
    })
}

/// Leaf 0x16: the processor's base and maximum frequency, the host's TSC rate, and the bus
/// (the crystal of leaf 0x15), in MHz, so a kernel need not time its processor against the
/// PIT either.
fn frequency_leaf() -> [u32; 4] {
    let mhz = (super::msr::host_tsc_hz() / 1_000_000) as u32;
    [mhz, mhz, (CRYSTAL_HZ / 1_000_000) as u32, 0]
}

/// The largest EBX of leaf 0x15 for which Linux's `crystal kHz * EBX` fits in 32 bits.
const LINUX_MAX_NUMERATOR: u64 = u32::MAX as u64 / (CRYSTAL_HZ / 1000);

/// The fraction p / q closest to `a / b` with 1 <= p <= `max_numerator` (at least 1).
fn closest_ratio(a: u64, b: u64, max_numerator: u64) -> (u64, u64) {
    let target = a as f64 / b as f64;
    let error = |(p, q): (u64, u64)| (p as f64 / q as f64 - target).abs();
    (1..=max_numerator)
        .map(|p| (p, ((p as f64 / target).round() as u64).max(1)))
        .min_by(|&x, &y| error(x).total_cmp(&error(y)))
        .expect("max_numerator is at least 1")
}

/// Reads four bytes of `bytes` at `at` as a little-endian register value.
fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// EAX, EBX, ECX, EDX for CPUID leaf `leaf`, subleaf `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    match leaf {
        0 => [
            MAX_BASIC_LEAF,
            word(VENDOR, 0),
            word(VENDOR, 8),
            word(VENDOR, 4),
        ],
        // EBX: CLFLUSH line size 8 * 8 = 64 bytes, one logical processor, APIC ID 0.
        1 => {
            let (ecx, edx) = leaf1_features();
            [SIGNATURE, 0x0001_0800, ecx, edx]
        }
        7 if subleaf == 0 => [
            0,
            leaf7::EBX_SMEP | leaf7::EBX_INVPCID | leaf7::EBX_SMAP,
            leaf7::ECX_RDPID,
            leaf7::EDX_ARCH_CAPABILITIES,
        ],
        0x15 => tsc_leaf(),
        0x16 => frequency_leaf(),
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        0x8000_0001 => [
            0,
            0,
            ext1::ECX_LAHF_LM | ext1::ECX_ABM,
            ext1::EDX_SYSCALL | ext1::EDX_NX | ext1::EDX_PAGE1GB | ext1::EDX_RDTSCP | ext1::EDX_LM,
        ],
        0x8000_0002..=0x8000_0004 => {
            let at = (leaf - 0x8000_0002) as usize * 16;
            [
                word(BRAND, at),
                word(BRAND, at + 4),
                word(BRAND, at + 8),
                word(BRAND, at + 12),
            ]
        }
        // Physical and linear address sizes.
        0x8000_0008 => [u32::from(super::MAXPHYADDR) | (48 << 8), 0, 0, 0],
        _ => [0; 4],
    }
}

/// The feature bits of leaf 1: ECX and EDX.
fn leaf1_features() -> (u32, u32) {
    (leaf1_ecx::ALL | leaf1_ecx::sse_extensions(), leaf1_edx::ALL)
}

/// Whether the CPU advertises `feature`: the instruction sets every x86-64 processor has,
/// and those the CPUID leaves above report (any other is not advertised).
pub fn advertises(feature: CpuidFeature) -> bool {
    use CpuidFeature::*;
    let (ecx, edx) = leaf1_features();
    let extended = cpuid(0x8000_0001, 0)[2];
    let (register, bit) = match feature {
        INTEL8086 | INTEL8086_ONLY | INTEL186 | INTEL286 | INTEL386 | INTEL486 | X64 => {
            return true;
        }
        MOVBE => (ecx, leaf1_ecx::MOVBE),
        POPCNT => (ecx, leaf1_ecx::POPCNT),
        CMPXCHG16B => (ecx, leaf1_ecx::CX16),
        LZCNT => (extended, ext1::ECX_ABM),
        FPU | FPU287 | FPU387 => (edx, leaf1_edx::FPU),
        CMOV => (edx, leaf1_edx::CMOV),
        MMX => (edx, leaf1_edx::MMX),
        FXSR => (edx, leaf1_edx::FXSR),
        SSE => (edx, leaf1_edx::SSE),
        SSE2 => (edx, leaf1_edx::SSE2),
        SSE3 => (ecx, leaf1_ecx::SSE3),
        SSSE3 => (ecx, leaf1_ecx::SSSE3),
        SSE4_1 => (ecx, leaf1_ecx::SSE4_1),
        SSE4_2 => (ecx, leaf1_ecx::SSE4_2),
        _ => return false,
    };
    register & bit != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendor_and_brand_read_back() {
        let [max, ebx, ecx, edx] = cpuid(0, 0);
        assert_eq!(max, 0x16);
        let vendor: Vec<u8> = [ebx, edx, ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&vendor, b"GenuineIntel");
        let brand: Vec<u8> = (0x8000_0002..=0x8000_0004)
            .flat_map(|leaf| cpuid(leaf, 0))
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert!(brand.starts_with(b"Umbra virtual CPU\0"));
    }

    #[test]
    fn leaf_0x15_gives_the_host_tsc_rate() {
        let [denominator, numerator, crystal, _] = cpuid(0x15, 0);
        assert_eq!(u64::from(crystal), CRYSTAL_HZ);
        // As Linux computes it, in kHz and 32-bit arithmetic.
        let khz = (crystal / 1000).checked_mul(numerator).unwrap() / denominator;
        let host_khz = super::super::msr::host_tsc_hz() / 1000;
        assert!(
            u64::from(khz).abs_diff(host_khz) <= host_khz / 100_000,
            "{khz} {host_khz}"
        );
    }

    #[test]
    fn leaf_0x16_gives_the_tsc_rate_and_the_crystal_in_mhz() {
        let [base, max, bus, _] = cpuid(0x16, 0);
        let host_mhz = super::super::msr::host_tsc_hz() / 1_000_000;
        assert_eq!((u64::from(base), u64::from(max)), (host_mhz, host_mhz));
        assert_eq!(u64::from(bus) * 1_000_000, CRYSTAL_HZ);
    }

    #[test]
    fn ratios_are_the_closest_fractions() {
        assert_eq!(
            closest_ratio(2_596_122_000, 1_000_000_000, 4294),
            (3079, 1186)
        );
        assert_eq!(closest_ratio(3_000_000_000, 1_000_000_000, 4294), (3, 1));
        assert_eq!(closest_ratio(500_000_000, 1_000_000_000, 4294), (1, 2));
    }

    #[test]
    fn long_mode_and_nx_are_advertised() {
        let [_, _, _, edx] = cpuid(0x8000_0001, 0);
        assert_ne!(edx & ext1::EDX_LM, 0);
        assert_ne!(edx & ext1::EDX_NX, 0);
        assert_eq!(
            cpuid(0x8000_0008, 0)[0] & 0xff,
            u32::from(super::super::MAXPHYADDR)
        );
    }
}
