//! What a translator (Umbra's JIT) sees of a vCPU, and what it may ask of it.
//!
//! Generated code runs a guest's instructions on a copy of the general registers and reads the
//! vCPU's TLB itself; everything else stays the interpreter's. A translator may run code only
//! while [`Interpreter::block_context`] gives a context: 64-bit code, no single-stepping, no
//! debug registers or watchpoints armed, no interrupt shadow, RFLAGS.RF clear and no
//! alignment checking. In that state an instruction's only architectural effects are on the
//! general registers, the arithmetic flags, RIP and memory, which generated code reproduces
//! for the instructions it translates and leaves to [`Interpreter::step`] for all others.

use std::sync::Arc;

use umbra_mmu::addr::{Gfn, Gva};
use umbra_mmu::shadow::ShadowMmu;
use umbra_mmu::tlb::{CodeInvalidations, InlineTlb};
use umbra_mmu::walker::AccessKind;

use super::Interpreter;
use super::fpu::mxcsr;
use crate::state::{CpuMode, RFLAGS_AC, RFLAGS_RF, RFLAGS_TF};

/// DR7's enable bits (L0-L3, G0-G3).
const DR7_ENABLES: u64 = 0xff;

/// CR0.AM: alignment checking is allowed.
const CR0_AM: u64 = 1 << 18;
/// CR0.EM: x87 and SSE instructions raise #UD or #NM.
const CR0_EM: u64 = 1 << 2;
/// CR0.TS: a task switch happened; the next x87 or SSE instruction raises #NM.
const CR0_TS: u64 = 1 << 3;
/// CR4.OSFXSR: SSE instructions are allowed.
const CR4_OSFXSR: u64 = 1 << 9;

/// The state that generated code for the current instruction pointer depends on and reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockContext {
    /// The TLB's bit for a data read in the current privilege context (user, supervisor, or
    /// supervisor with EFLAGS.AC set): it names the context, and blocks are keyed by it.
    pub read_bit: u16,
    /// The TLB's bit for a data write in that context.
    pub write_bit: u16,
    /// FS's base address.
    pub fs_base: u64,
    /// GS's base address.
    pub gs_base: u64,
    /// SSE instructions run (CR4.OSFXSR set, CR0.EM and CR0.TS clear) rather than fault.
    pub sse: bool,
    /// SSE floating-point instructions run with no exception to raise: `sse`, and MXCSR
    /// masks every SIMD floating-point exception (as it does from reset), so the host may
    /// run them under the guest's MXCSR ([`Interpreter::mxcsr_register`]) and none traps.
    pub float: bool,
}

/// The guest page holding code at some linear address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodePage {
    /// The guest physical address of the instruction.
    pub gpa: u64,
    /// The host address of the page's first byte.
    pub host_page: *const u8,
}

impl Interpreter {
    /// The context generated code may run in now, or `None` when only the interpreter may
    /// run the next instruction (see the module's documentation).
    pub fn block_context(&self) -> Option<BlockContext> {
        let rflags = self.regs.rflags;
        // At CPL 1 or 2 CLI and STI depend on IOPL: blocks run at CPL 0 or 3 only, so that a
        // supervisor context means CPL 0.
        let plain = self.mode() == CpuMode::Long
            && matches!(self.cpl, 0 | 3)
            && rflags & (RFLAGS_TF | RFLAGS_RF) == 0
            && self.dr[7] & DR7_ENABLES == 0
            && !self.interrupt_shadow
            && !self.halted
            && !self.watching()
            && !(self.cpl == 3 && self.sregs.cr0 & CR0_AM != 0 && rflags & RFLAGS_AC != 0);
        let sse = self.sregs.cr4 & CR4_OSFXSR != 0 && self.sregs.cr0 & (CR0_EM | CR0_TS) == 0;
        plain.then(|| BlockContext {
            read_bit: InlineTlb::direct_bit(self.access(AccessKind::Read)),
            write_bit: InlineTlb::direct_bit(self.access(AccessKind::Write)),
            fs_base: self.sregs.fs.base,
            gs_base: self.sregs.gs.base,
            sse,
            float: sse && self.fpu.state.mxcsr & mxcsr::MASKS == mxcsr::MASKS,
        })
    }

    /// Where the instruction at `rip` lies, if it may be fetched now and lies in RAM (a fault
    /// or device memory gives `None`: the interpreter runs it). Nothing is protected: see
    /// [`Interpreter::protect_code`].
    pub fn code_page(&mut self, rip: u64) -> Option<CodePage> {
        let linear = self.fetch_linear(rip);
        if !self.canonical(linear) {
            return None;
        }
        let fetch = self.access(AccessKind::Fetch);
        let mapping = self.mmu.translate(Gva(linear), fetch).ok()?;
        let host = mapping.host?;
        Some(CodePage {
            gpa: mapping.gpa.0,
            host_page: (host & !0xfff) as *const u8,
        })
    }

    /// The linear address of the next instruction (CS's base added to RIP outside 64-bit
    /// mode), as a debugger's breakpoints name it.
    pub fn rip_linear(&self) -> u64 {
        self.fetch_linear(self.regs.rip)
    }

    /// Makes every store to guest frame `gfn` take the slow path from the next instruction
    /// boundary on, so that it reaches [`ShadowMmu::code_written`]: call before reading code
    /// from the frame to translate it.
    pub fn protect_code(&self, gfn: Gfn) {
        self.mmu.shadow().protect_code(gfn);
    }

    /// The VM's shadow MMU, which tells which code frames were written.
    pub fn shadow_mmu(&self) -> &Arc<ShadowMmu> {
        self.mmu.shadow()
    }

    /// Catches up with TLB flushes and memslot changes made elsewhere, as the interpreter does
    /// before every instruction: call before running generated code.
    pub fn begin_block(&mut self) {
        self.mmu.begin_instruction();
    }

    /// How many times TLB entries were dropped: while it stays the same (and so does the
    /// root), every translation made since is still right.
    pub fn tlb_invalidations(&self) -> u64 {
        self.mmu.tlb_invalidations()
    }

    /// How many of those may have changed the translation of a page holding code some
    /// vCPU cached ([`CodeInvalidations`]).
    pub fn tlb_code_invalidations(&self) -> CodeInvalidations {
        self.mmu.tlb_code_invalidations()
    }

    /// The TLB as generated code may read it, or `None` when every access must walk.
    pub fn inline_tlb(&self) -> Option<InlineTlb> {
        self.mmu.inline_tlb()
    }

    /// The host address for a data access of `len` bytes at linear address `linear`, when it
    /// may go straight to host memory: canonical, within one page, translated without a
    /// fault, and RAM that a store may reach directly, or, for a store, a frame of shadowed
    /// guest tables, whose shadow entries the store makes stale are zapped now (see
    /// [`umbra_mmu::vcpu_mmu::VcpuMmu::prepare_store`]: the caller must store at once).
    /// `None` otherwise, with nothing changed: the interpreter then runs the instruction and
    /// takes the fault or the slow path itself.
    pub fn translate_direct(&mut self, linear: u64, len: usize, write: bool) -> Option<usize> {
        if !self.canonical(linear) || (linear & 0xfff) as usize + len > 0x1000 {
            return None;
        }
        let kind = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let access = self.access(kind);
        // The interpreter's own attempt after a `None` walks again: the same fault, and the
        // same accessed bits set (setting them twice is setting them once).
        if write {
            self.mmu.prepare_store(Gva(linear), len, access)
        } else {
            self.mmu.translate(Gva(linear), access).ok()?.host
        }
    }

    /// IA32_KERNEL_GS_BASE, which SWAPGS exchanges with GS's base, for generated code that
    /// runs SWAPGS: valid until the vCPU next runs an instruction itself.
    pub fn kernel_gs_base(&self) -> u64 {
        self.msr.kernel_gs_base
    }

    /// Sets GS's base and IA32_KERNEL_GS_BASE, as generated code that ran SWAPGS left them.
    pub fn set_gs_bases(&mut self, gs_base: u64, kernel_gs_base: u64) {
        self.sregs.gs.base = gs_base;
        self.msr.kernel_gs_base = kernel_gs_base;
    }

    /// The segment selectors, in the encoding's order (ES, CS, SS, DS, FS, GS), for generated
    /// code that reads them: valid until the vCPU next runs an instruction itself.
    pub fn selectors(&self) -> [u16; 6] {
        let s = &self.sregs;
        [s.es, s.cs, s.ss, s.ds, s.fs, s.gs].map(|segment| segment.selector)
    }

    /// CR0 to CR4 by number as MOV from them reads them (CR1, which does not exist, as 0):
    /// the interpreter's MOV reads them here, and generated code that reads them at CPL 0 a
    /// copy, valid until the vCPU next runs an instruction itself.
    pub fn control_registers(&self) -> [u64; 5] {
        let s = &self.sregs;
        [s.cr0, 0, s.cr2, self.mmu.walker().cr3(), s.cr4]
    }

    /// What RDTSC adds to the host's time-stamp counter for the guest's, for generated code
    /// that runs RDTSC at CPL 0: valid until the vCPU next runs an instruction itself.
    pub fn tsc_offset(&self) -> u64 {
        self.msr.tsc_offset
    }

    /// The XMM registers, XMM0 first, 16 bytes each, for generated code that runs SSE
    /// instructions that touch nothing else (no MXCSR): valid until the vCPU next runs an
    /// instruction itself.
    pub fn xmm_registers(&mut self) -> *mut u128 {
        self.fpu.state.xmm.as_mut_ptr()
    }

    /// MXCSR, for generated code that runs SSE floating-point instructions under it (only in
    /// a [`BlockContext`] whose `float` is set): valid until the vCPU next runs an
    /// instruction itself.
    pub fn mxcsr_register(&mut self) -> *mut u32 {
        &raw mut self.fpu.state.mxcsr
    }

    /// Counts `instructions` retired by generated code, and the `tlb_hits` it made inline.
    pub fn retire_translated(&mut self, instructions: u64, tlb_hits: u64) {
        self.retired += instructions;
        self.mmu.count_tlb_hits(tlb_hits);
    }
}
