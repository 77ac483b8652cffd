//! Model-specific registers: the ones a kernel uses, with their reset values and write checks.
//! RDMSR or WRMSR of any other MSR raises #GP(0), as on hardware.

use super::Interpreter;
use super::exception::Exception;

/// IA32_APIC_BASE after reset: the local APIC at 0xfee00000, enabled, this is the BSP.
pub const APIC_BASE_RESET: u64 = 0xfee0_0000 | (1 << 11) | (1 << 8);

/// MSR numbers.
pub mod index {
    /// IA32_TIME_STAMP_COUNTER.
    pub const TSC: u32 = 0x10;
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_BIOS_SIGN_ID: the microcode revision, in the high half.
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    /// IA32_ARCH_CAPABILITIES (read-only).
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_MISC_ENABLE.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR.
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK.
    pub const SFMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// IA32_TSC_AUX.
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// IA-32e mode enable.
    pub const LME: u64 = 1 << 8;
    /// IA-32e mode active (read-only).
    pub const LMA: u64 = 1 << 10;
    /// Execute-disable enable.
    pub const NXE: u64 = 1 << 11;
}

/// The MSRs that are not part of [`crate::state::SystemRegisters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrState {
    /// IA32_STAR.
    pub star: u64,
    /// IA32_LSTAR.
    pub lstar: u64,
    /// IA32_CSTAR.
    pub cstar: u64,
    /// IA32_FMASK.
    pub sfmask: u64,
    /// IA32_KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// The difference between the guest's TSC and the host's.
    pub tsc_offset: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_TSC_AUX.
    pub tsc_aux: u64,
}

impl Default for MsrState {
    fn default() -> Self {
        MsrState {
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            tsc_offset: 0,
            pat: 0x0007_0406_0007_0406,
            // Fast string operations enabled, as firmware leaves it.
            misc_enable: 1,
            tsc_aux: 0,
        }
    }
}

/// IA32_ARCH_CAPABILITIES: the speculative-execution weaknesses the processor does not have,
/// which are all that bits of this MSR name, since Umbra's processor does not speculate: not
/// Meltdown (RDCL_NO), nor SSB, MDS, TAA, the MMIO stale-data family (SBDR/SSDP, FBSDP, PSDP),
/// BHI, PBRSB, GDS, RFDS, ITS; no machine check on a page-size change (PSCHANGE_MC_NO), and
/// no L1D flush wanted on entering a nested guest (SKIP_L1DFL_VMENTRY). A kernel then spends
/// nothing on them (Linux: no page-table isolation, no VERW on the way to user mode). It
/// does not say enhanced IBRS, which would need IA32_SPEC_CTRL.
pub const ARCH_CAPABILITIES: u64 = (1 << 0) // RDCL_NO
    | (1 << 3) // SKIP_L1DFL_VMENTRY
    | (1 << 4) // SSB_NO
    | (1 << 5) // MDS_NO
    | (1 << 6) // PSCHANGE_MC_NO
    | (1 << 8) // TAA_NO
    | (1 << 13) // SBDR_SSDP_NO
    | (1 << 14) // FBSDP_NO
    | (1 << 15) // PSDP_NO
    | (1 << 20) // BHI_NO
    | (1 << 24) // PBRSB_NO
    | (1 << 26) // GDS_NO
    | (1 << 27) // RFDS_NO
    | (1 << 62); // ITS_NO

/// The microcode revision IA32_BIOS_SIGN_ID reads as (in its high half): KVM's default.
pub const MICROCODE_REVISION: u64 = 0x1_0000_0000;

/// The host's time-stamp counter.
pub fn host_tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no memory effects and every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The host's time-stamp counter rate in Hz, measured once per process over 10 ms against
/// the host's monotonic clock. The guest's TSC ticks at this rate: CPUID leaf 0x15 reports it
/// and the local APIC's TSC-deadline timer counts in it.
pub fn host_tsc_hz() -> u64 {
    static RATE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RATE.get_or_init(|| {
        let (start, tsc) = (std::time::Instant::now(), host_tsc());
        std::thread::sleep(std::time::Duration::from_millis(10));
        let ticks = host_tsc().wrapping_sub(tsc);
        let elapsed = start.elapsed().as_nanos().max(1);
        (u128::from(ticks) * 1_000_000_000 / elapsed) as u64
    })
}

/// Whether `address` is canonical for 48-bit linear addresses (WRMSR of a base register
/// checks it).
fn canonical(address: u64) -> bool {
    umbra_mmu::paging::is_canonical(umbra_mmu::addr::Gva(address), false)
}

impl Interpreter {
    /// The guest's time-stamp counter.
    pub(crate) fn tsc(&self) -> u64 {
        host_tsc().wrapping_add(self.msr.tsc_offset)
    }

    /// RDMSR.
    pub(crate) fn read_msr(&self, msr: u32) -> Result<u64, Exception> {
        use index::*;
        Ok(match msr {
            TSC => self.tsc(),
            APIC_BASE => self.sregs.apic_base,
            BIOS_SIGN_ID => MICROCODE_REVISION,
            ARCH_CAPABILITIES => self::ARCH_CAPABILITIES,
            SYSENTER_CS => self.msr.sysenter_cs,
            SYSENTER_ESP => self.msr.sysenter_esp,
            SYSENTER_EIP => self.msr.sysenter_eip,
            MISC_ENABLE => self.msr.misc_enable,
            PAT => self.msr.pat,
            EFER => self.sregs.efer,
            STAR => self.msr.star,
            LSTAR => self.msr.lstar,
            CSTAR => self.msr.cstar,
            SFMASK => self.msr.sfmask,
            FS_BASE => self.sregs.fs.base,
            GS_BASE => self.sregs.gs.base,
            KERNEL_GS_BASE => self.msr.kernel_gs_base,
            TSC_AUX => self.msr.tsc_aux,
            _ => return Err(Exception::gp(0)),
        })
    }

    /// WRMSR, with the checks that make a bad value #GP(0).
    pub(crate) fn write_msr(&mut self, msr: u32, value: u64) -> Result<(), Exception> {
        use index::*;
        let gp = Err(Exception::gp(0));
        match msr {
            TSC => self.msr.tsc_offset = value.wrapping_sub(host_tsc()),
            APIC_BASE => {
                // Bits 8 (BSP), 10 (x2APIC), 11 (enable) and the base below MAXPHYADDR.
                let reserved = !(0xff_ffff_f000u64 | (1 << 8) | (1 << 11));
                if value & reserved != 0 {
                    return gp;
                }
                self.sregs.apic_base = value;
            }
            // Software writes 0 before CPUID to have the revision loaded: nothing to keep.
            BIOS_SIGN_ID => {}
            SYSENTER_CS => self.msr.sysenter_cs = value & 0xffff,
            SYSENTER_ESP | SYSENTER_EIP if !canonical(value) => return gp,
            SYSENTER_ESP => self.msr.sysenter_esp = value,
            SYSENTER_EIP => self.msr.sysenter_eip = value,
            MISC_ENABLE => self.msr.misc_enable = value,
            PAT => {
                // Each byte must be a valid memory type: 0, 1, 4, 5, 6 or 7.
                if value
                    .to_le_bytes()
                    .iter()
                    .any(|&t| t > 7 || t == 2 || t == 3)
                {
                    return gp;
                }
                self.msr.pat = value;
            }
            EFER => self.write_efer(value)?,
            STAR => self.msr.star = value,
            LSTAR | CSTAR | FS_BASE | GS_BASE | KERNEL_GS_BASE if !canonical(value) => return gp,
            LSTAR => self.msr.lstar = value,
            CSTAR => self.msr.cstar = value,
            SFMASK => self.msr.sfmask = value & 0xffff_ffff,
            FS_BASE => self.sregs.fs.base = value,
            GS_BASE => self.sregs.gs.base = value,
            KERNEL_GS_BASE => self.msr.kernel_gs_base = value,
            TSC_AUX if value >> 32 != 0 => return gp,
            TSC_AUX => self.msr.tsc_aux = value,
            _ => return gp,
        }
        Ok(())
    }

    /// WRMSR to EFER: only SCE, LME and NXE are writable; LME may not change while paging is
    /// on; LMA is the processor's and keeps its value.
    fn write_efer(&mut self, value: u64) -> Result<(), Exception> {
        const CR0_PG: u64 = 1 << 31;
        let writable = efer::SCE | efer::LME | efer::NXE;
        if value & !(writable | efer::LMA) != 0 {
            return Err(Exception::gp(0));
        }
        let old = self.sregs.efer;
        if self.sregs.cr0 & CR0_PG != 0 && (old ^ value) & efer::LME != 0 {
            return Err(Exception::gp(0));
        }
        self.sregs.efer = (value & writable) | (old & efer::LMA);
        self.update_paging_role();
        Ok(())
    }
}
