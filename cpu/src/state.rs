//! Architectural register state, in a form independent of any backend.
//!
//! The names and layouts follow the SDM; each backend converts to and from its own
//! representation at its boundary, so the frontend, gdb and the differential tests see one
//! shape whatever runs the guest.

/// The general-purpose registers, RIP and RFLAGS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15, in the encoding's order.
    pub gpr: [u64; 16],
    /// The instruction pointer.
    pub rip: u64,
    /// The flags register.
    pub rflags: u64,
}

/// RFLAGS bit 1, which always reads as 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.TF: single-step trap.
pub const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.IF: maskable interrupts are enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.DF: string instructions count down.
pub const RFLAGS_DF: u64 = 1 << 10;
/// RFLAGS.IOPL: the I/O privilege level (two bits).
pub const RFLAGS_IOPL: u64 = 3 << 12;
/// RFLAGS.NT: nested task.
pub const RFLAGS_NT: u64 = 1 << 14;
/// RFLAGS.RF: resume flag.
pub const RFLAGS_RF: u64 = 1 << 16;
/// RFLAGS.VM: virtual-8086 mode.
pub const RFLAGS_VM: u64 = 1 << 17;
/// RFLAGS.AC: alignment check (and the SMAP override).
pub const RFLAGS_AC: u64 = 1 << 18;
/// RFLAGS.VIF: virtual interrupt flag.
pub const RFLAGS_VIF: u64 = 1 << 19;
/// RFLAGS.VIP: virtual interrupt pending.
pub const RFLAGS_VIP: u64 = 1 << 20;
/// RFLAGS.ID: CPUID is supported.
pub const RFLAGS_ID: u64 = 1 << 21;

/// A segment register: the visible selector and the descriptor cache behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The selector.
    pub selector: u16,
    /// The cached base address.
    pub base: u64,
    /// The cached limit, in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// The descriptor's type field (bits 3:0 of the access byte).
    pub type_: u8,
    /// S: code or data (1) rather than system (0).
    pub s: bool,
    /// The descriptor privilege level.
    pub dpl: u8,
    /// P: the segment is present.
    pub present: bool,
    /// AVL: available to software.
    pub avl: bool,
    /// L: a 64-bit code segment.
    pub l: bool,
    /// D/B: default operation size is 32 bits.
    pub db: bool,
    /// G: limit granularity is 4 KiB.
    pub g: bool,
    /// The register holds no usable segment (a null selector was loaded).
    pub unusable: bool,
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Linear base address of the table.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// Segment, descriptor-table, control registers and EFER.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemRegisters {
    /// CS.
    pub cs: Segment,
    /// DS.
    pub ds: Segment,
    /// ES.
    pub es: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// SS.
    pub ss: Segment,
    /// The task register.
    pub tr: Segment,
    /// The LDT register.
    pub ldtr: Segment,
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR.
    pub idt: DescriptorTable,
    /// CR0.
    pub cr0: u64,
    /// CR2: the last page-fault address.
    pub cr2: u64,
    /// CR3: the page-table base.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8: the task-priority register.
    pub cr8: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
}

/// The CPU mode, as far as a person reading a summary cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// CR0.PE = 0.
    Real,
    /// Protected mode with a 16- or 32-bit code segment (or virtual-8086 mode).
    Protected,
    /// IA-32e mode with a 64-bit code segment.
    Long,
    /// IA-32e mode with a 16- or 32-bit code segment.
    Compatibility,
}

impl SystemRegisters {
    /// The mode these registers put the CPU in.
    pub fn mode(&self) -> CpuMode {
        const CR0_PE: u64 = 1;
        const EFER_LMA: u64 = 1 << 10;
        match (self.cr0 & CR0_PE != 0, self.efer & EFER_LMA != 0, self.cs.l) {
            (false, _, _) => CpuMode::Real,
            (true, false, _) => CpuMode::Protected,
            (true, true, true) => CpuMode::Long,
            (true, true, false) => CpuMode::Compatibility,
        }
    }
}

impl std::fmt::Display for CpuMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CpuMode::Real => "real mode",
            CpuMode::Protected => "protected mode",
            CpuMode::Long => "64-bit mode",
            CpuMode::Compatibility => "compatibility mode",
        })
    }
}
