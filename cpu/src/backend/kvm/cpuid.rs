//! The CPUID a KVM guest sees: what KVM supports (`KVM_GET_SUPPORTED_CPUID`), less what
//! Umbra's machine cannot back, as QEMU trims it.
//!
//! - Always: the features that need KVM's in-kernel local APIC, since interrupts come from
//!   Umbra's own controllers through `KVM_INTERRUPT`: x2APIC, the TSC-deadline timer, and the
//!   paravirtual features KVM implements in its APIC (PV EOI, PV unhalt, PV IPIs, async page
//!   faults delivered by interrupt).
//! - On PVM: the features whose instructions KVM's instruction emulator cannot run, since PVM
//!   runs all guest kernel code in it (CMPXCHG16B, XSAVE/XRSTOR and the AVX family that needs
//!   them, INVPCID and PCID, STAC/CLAC, CLWB and CLFLUSHOPT, MOVBE, RDRAND and RDSEED,
//!   FSGSBASE, RDPID, PKU, POPCNT, AES-NI and PCLMULQDQ, and the bit-manipulation
//!   extensions). A guest kernel then patches its alternatives to the baseline instructions
//!   the emulator has. On hardware KVM the guest
//!   sees everything KVM supports but the first group.
//!
//! PVM controls only the CPUID bits its `KVM_GET_SUPPORTED_CPUID` reports (CMPXCHG16B, CLWB
//! and CLFLUSHOPT among those Umbra removes); the guest sees the host's value of every other
//! bit, whatever `KVM_SET_CPUID2` says. For a Linux guest, [`PVM_LINUX_PARAMETERS`] turns the
//! rest off on the kernel's command line instead.

use kvm_bindings::CpuId;

use super::KvmFlavor;

/// A CPUID register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// Feature bits taken out of one register of one leaf (subleaf 0).
struct Removed {
    leaf: u32,
    reg: Reg,
    bits: u32,
}

/// Bit `n`.
const fn bit(n: u32) -> u32 {
    1 << n
}

/// KVM's paravirtual feature leaf.
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// What needs KVM's in-kernel local APIC.
const NEEDS_IN_KERNEL_APIC: &[Removed] = &[
    Removed {
        leaf: 1,
        reg: Reg::Ecx,
        // x2APIC, TSC-deadline.
        bits: bit(21) | bit(24),
    },
    Removed {
        leaf: KVM_CPUID_FEATURES,
        reg: Reg::Eax,
        // ASYNC_PF, PV_EOI, PV_UNHALT, ASYNC_PF_VMEXIT, PV_SEND_IPI, PV_SCHED_YIELD,
        // ASYNC_PF_INT.
        bits: bit(4) | bit(6) | bit(7) | bit(10) | bit(11) | bit(13) | bit(14),
    },
];

/// What KVM's instruction emulator cannot run, for PVM.
const PVM_EMULATOR_GAPS: &[Removed] = &[
    Removed {
        leaf: 1,
        reg: Reg::Ecx,
        // PCLMULQDQ, FMA, CMPXCHG16B, PCID, MOVBE, POPCNT, AES, XSAVE, OSXSAVE, AVX, F16C,
        // RDRAND.
        bits: bit(1)
            | bit(12)
            | bit(13)
            | bit(17)
            | bit(22)
            | bit(23)
            | bit(25)
            | bit(26)
            | bit(27)
            | bit(28)
            | bit(29)
            | bit(30),
    },
    Removed {
        leaf: 7,
        reg: Reg::Ebx,
        // FSGSBASE, BMI1, HLE, AVX2, BMI2, INVPCID, RTM, MPX, AVX-512F/DQ, RDSEED, ADX,
        // SMAP, AVX-512IFMA, CLFLUSHOPT, CLWB, AVX-512PF/ER/CD, SHA, AVX-512BW/VL.
        bits: bit(0)
            | bit(3)
            | bit(4)
            | bit(5)
            | bit(8)
            | bit(10)
            | bit(11)
            | bit(14)
            | bit(16)
            | bit(17)
            | bit(18)
            | bit(19)
            | bit(20)
            | bit(21)
            | bit(23)
            | bit(24)
            | bit(26)
            | bit(27)
            | bit(28)
            | bit(29)
            | bit(30)
            | bit(31),
    },
    Removed {
        leaf: 7,
        reg: Reg::Ecx,
        // Everything but UMIP (bit 2, no instruction of its own): AVX-512 extensions, PKU and
        // OSPKE, VAES, VPCLMULQDQ, GFNI, RDPID, MOVDIRI, ...
        bits: !bit(2),
    },
    Removed {
        leaf: 7,
        reg: Reg::Edx,
        // AVX-512 extensions, SERIALIZE, TSXLDTRK, AMX, ...; the speculation-control bits
        // (26-31) stay, they only describe the host.
        bits: bit(2) | bit(3) | bit(8) | bit(14) | bit(16) | bit(22) | bit(23) | bit(24) | bit(25),
    },
    Removed {
        leaf: 0x8000_0001,
        reg: Reg::Ecx,
        // SSE4A, XOP, FMA4, TBM.
        bits: bit(6) | bit(11) | bit(16) | bit(21),
    },
];

/// What a Linux guest's command line needs on PVM, for the features in [`PVM_EMULATOR_GAPS`]
/// that PVM shows from the host whatever the guest's CPUID says: FXSAVE rather than XSAVE
/// (which also turns AVX off); neither SMAP's STAC/CLAC, INVPCID, FSGSBASE, RDPID, RDRAND,
/// RDSEED nor POPCNT; and none of the SIMD extensions the kernel's own crypto and checksums
/// use between kernel_fpu_begin and kernel_fpu_end (SSSE3, SSE4.1, SSE4.2, AES-NI,
/// PCLMULQDQ), whose LDMXCSR and vector arithmetic the emulator cannot run either: the
/// kernel falls back to its generic C code.
///
/// Then what PVM's pace calls for, where the emulator runs kernel code at a few million
/// instructions a second: no boot-time checks of the kernel by itself that take minutes
/// there and change nothing it runs afterwards (the crypto self-tests; two initcalls of
/// tracing, one looking up every ftrace call site in kallsyms to disable those of weak
/// functions, one rewriting every trace event's format with enum values), and no lockup
/// watchdog, whose reports of a slow CPU are themselves slow to print.
pub const PVM_LINUX_PARAMETERS: &[&str] = &[
    "noxsave",
    "clearcpuid=smap,invpcid,fsgsbase,rdpid,rdrand,rdseed,popcnt,ssse3,sse4_1,sse4_2,aes,pclmulqdq",
    "cryptomgr.notests",
    "initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init",
    "nowatchdog",
];

/// `supported` with the features Umbra's machine on `flavor` cannot back taken out.
pub(super) fn guest_cpuid(mut supported: CpuId, flavor: KvmFlavor) -> CpuId {
    let pvm: &[Removed] = if flavor == KvmFlavor::Pvm {
        PVM_EMULATOR_GAPS
    } else {
        &[]
    };
    for removed in NEEDS_IN_KERNEL_APIC.iter().chain(pvm) {
        for entry in supported.as_mut_slice() {
            if entry.function != removed.leaf || entry.index != 0 {
                continue;
            }
            let reg = match removed.reg {
                Reg::Eax => &mut entry.eax,
                Reg::Ebx => &mut entry.ebx,
                Reg::Ecx => &mut entry.ecx,
                Reg::Edx => &mut entry.edx,
            };
            *reg &= !removed.bits;
        }
    }
    supported
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_cpuid_entry2;

    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        let [eax, ebx, ecx, edx] = regs;
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    fn leaf(cpuid: &CpuId, function: u32, index: u32) -> [u32; 4] {
        let e = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap();
        [e.eax, e.ebx, e.ecx, e.edx]
    }

    fn supported() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0, [0x800f12, 0, u32::MAX, u32::MAX]),
            entry(7, 0, [0, u32::MAX, u32::MAX, u32::MAX]),
            entry(7, 1, [u32::MAX; 4]),
            entry(KVM_CPUID_FEATURES, 0, [u32::MAX, 0, 0, 0]),
        ])
        .unwrap()
    }

    #[test]
    fn hardware_kvm_loses_only_what_needs_the_in_kernel_apic() {
        let hardware = KvmFlavor::Hardware {
            technology: "VMX",
            two_dimensional_paging: true,
        };
        let cpuid = guest_cpuid(supported(), hardware);
        assert_eq!(
            leaf(&cpuid, 1, 0),
            [0x800f12, 0, !(bit(21) | bit(24)), u32::MAX]
        );
        assert_eq!(leaf(&cpuid, 7, 0), [0, u32::MAX, u32::MAX, u32::MAX]);
        let pv = leaf(&cpuid, KVM_CPUID_FEATURES, 0)[0];
        assert_eq!(pv & (bit(6) | bit(14)), 0);
        // Clocksource, steal time, PV TLB flush stay.
        assert_eq!(pv & (bit(3) | bit(5) | bit(9)), bit(3) | bit(5) | bit(9));
    }

    #[test]
    fn pvm_also_loses_what_its_emulator_cannot_run() {
        let cpuid = guest_cpuid(supported(), KvmFlavor::Pvm);
        let [_, _, ecx, edx] = leaf(&cpuid, 1, 0);
        for (gone, name) in [
            (13, "CMPXCHG16B"),
            (26, "XSAVE"),
            (22, "MOVBE"),
            (21, "x2APIC"),
        ] {
            assert_eq!(ecx & bit(gone), 0, "{name}");
        }
        // SSE3 to SSE4.2 stay (user code runs natively); so does every leaf 1 EDX
        // feature.
        for (kept, name) in [(0, "SSE3"), (9, "SSSE3"), (19, "SSE4.1"), (20, "SSE4.2")] {
            assert_ne!(ecx & bit(kept), 0, "{name}");
        }
        assert_eq!(edx, u32::MAX);
        let [_, ebx, ecx, _] = leaf(&cpuid, 7, 0);
        for (gone, name) in [(10, "INVPCID"), (20, "SMAP"), (24, "CLWB"), (0, "FSGSBASE")] {
            assert_eq!(ebx & bit(gone), 0, "{name}");
        }
        assert_ne!(ebx & bit(7), 0, "SMEP");
        assert_eq!(ecx, bit(2), "only UMIP");
        // Other subleaves are left alone.
        assert_eq!(leaf(&cpuid, 7, 1), [u32::MAX; 4]);
    }
}
