//! The x86-64 register file as gdb sees it: gdb's 64-bit core and SSE registers (laid out by
//! `gdbstub_arch`), then what QEMU's x86-64 description adds and kernel developers read every
//! day: `fs_base`, `gs_base`, `k_gs_base`, `cr0`, `cr2`, `cr3`, `cr4`, `cr8`, `efer`
//! (`target.xml`, in the order of the `g` packet).

use gdbstub::arch::{Arch, Registers};
use gdbstub_arch::x86::reg::{X86_64CoreRegs, X86SegmentRegs, X87FpuInternalRegs};
use umbra_cpu::interp::fpu::FxState;
use umbra_cpu::state::{Registers as GeneralRegisters, SystemRegisters};

/// Umbra's x86-64 vCPU, for gdbstub.
pub enum UmbraX86_64 {}

impl Arch for UmbraX86_64 {
    type Usize = u64;
    type Registers = UmbraRegisters;
    type BreakpointKind = usize;
    type RegId = ();

    fn target_description_xml() -> Option<&'static str> {
        Some(include_str!("target.xml"))
    }
}

/// The bytes of gdbstub_arch's core and SSE registers in the `g` packet.
const CORE_BYTES: usize = 0x218;
/// The system registers after them, 8 bytes each.
const SYSTEM_REGISTERS: usize = 9;

/// Every register gdb reads in one `g` packet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UmbraRegisters {
    /// General, segment-selector, x87 and SSE registers.
    pub core: X86_64CoreRegs,
    /// FS.base.
    pub fs_base: u64,
    /// GS.base.
    pub gs_base: u64,
    /// IA32_KERNEL_GS_BASE (what SWAPGS exchanges with GS.base).
    pub k_gs_base: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8.
    pub cr8: u64,
    /// IA32_EFER.
    pub efer: u64,
}

impl UmbraRegisters {
    fn system(&self) -> [u64; SYSTEM_REGISTERS] {
        [
            self.fs_base,
            self.gs_base,
            self.k_gs_base,
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.cr8,
            self.efer,
        ]
    }

    fn system_mut(&mut self) -> [&mut u64; SYSTEM_REGISTERS] {
        [
            &mut self.fs_base,
            &mut self.gs_base,
            &mut self.k_gs_base,
            &mut self.cr0,
            &mut self.cr2,
            &mut self.cr3,
            &mut self.cr4,
            &mut self.cr8,
            &mut self.efer,
        ]
    }
}

impl Registers for UmbraRegisters {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for value in self.system() {
            value
                .to_le_bytes()
                .into_iter()
                .for_each(|b| write_byte(Some(b)));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != CORE_BYTES + 8 * SYSTEM_REGISTERS {
            return Err(());
        }
        let (core, system) = bytes.split_at(CORE_BYTES);
        self.core.gdb_deserialize(core)?;
        for (register, chunk) in self.system_mut().into_iter().zip(system.chunks_exact(8)) {
            *register = u64::from_le_bytes(chunk.try_into().map_err(|_| ())?);
        }
        Ok(())
    }
}

/// gdb's order of the general registers (RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8-R15) as
/// indices into Umbra's (the encoding's: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15).
const GDB_GPR_ORDER: [usize; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];

/// The vCPU state a `g` packet shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuState {
    /// General registers, RIP and RFLAGS.
    pub regs: GeneralRegisters,
    /// Segments, control registers, EFER.
    pub sregs: SystemRegisters,
    /// x87 and SSE.
    pub fx: FxState,
    /// IA32_KERNEL_GS_BASE.
    pub k_gs_base: u64,
}

impl VcpuState {
    /// The registers as gdb sees them.
    pub fn to_gdb(&self) -> UmbraRegisters {
        let (regs, sregs, fx) = (&self.regs, &self.sregs, &self.fx);
        let st = fx.st.map(|value| {
            let mut bytes = [0u8; 10];
            bytes.copy_from_slice(&value.to_le_bytes()[..10]);
            bytes
        });
        UmbraRegisters {
            core: X86_64CoreRegs {
                regs: GDB_GPR_ORDER.map(|i| regs.gpr[i]),
                eflags: regs.rflags as u32,
                rip: regs.rip,
                segments: X86SegmentRegs {
                    cs: sregs.cs.selector.into(),
                    ss: sregs.ss.selector.into(),
                    ds: sregs.ds.selector.into(),
                    es: sregs.es.selector.into(),
                    fs: sregs.fs.selector.into(),
                    gs: sregs.gs.selector.into(),
                },
                st,
                fpu: X87FpuInternalRegs {
                    fctrl: fx.fcw.into(),
                    fstat: fx.fsw.into(),
                    ftag: fx.full_tag_word().into(),
                    fiseg: 0,
                    fioff: fx.fip as u32,
                    foseg: 0,
                    fooff: fx.fdp as u32,
                    fop: fx.fop.into(),
                },
                xmm: fx.xmm,
                mxcsr: fx.mxcsr,
            },
            fs_base: sregs.fs.base,
            gs_base: sregs.gs.base,
            k_gs_base: self.k_gs_base,
            cr0: sregs.cr0,
            cr2: sregs.cr2,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            cr8: sregs.cr8,
            efer: sregs.efer,
        }
    }

    /// This state with what gdb wrote. A segment register written takes the new selector
    /// and keeps its descriptor cache, as a debugger's write to a hidden register cannot be
    /// checked against a descriptor table the guest may not have yet; write the base with
    /// `fs_base` or `gs_base`.
    pub fn with_gdb(&self, gdb: &UmbraRegisters) -> VcpuState {
        let mut next = *self;
        let core = &gdb.core;
        for (gdb_index, &umbra_index) in GDB_GPR_ORDER.iter().enumerate() {
            next.regs.gpr[umbra_index] = core.regs[gdb_index];
        }
        next.regs.rip = core.rip;
        next.regs.rflags = (self.regs.rflags & !0xffff_ffff) | u64::from(core.eflags);
        let s = &mut next.sregs;
        let selectors = &core.segments;
        for (segment, selector) in [
            (&mut s.cs, selectors.cs),
            (&mut s.ss, selectors.ss),
            (&mut s.ds, selectors.ds),
            (&mut s.es, selectors.es),
            (&mut s.fs, selectors.fs),
            (&mut s.gs, selectors.gs),
        ] {
            segment.selector = selector as u16;
        }
        s.fs.base = gdb.fs_base;
        s.gs.base = gdb.gs_base;
        s.cr0 = gdb.cr0;
        s.cr2 = gdb.cr2;
        s.cr3 = gdb.cr3;
        s.cr4 = gdb.cr4;
        s.cr8 = gdb.cr8;
        s.efer = gdb.efer;
        next.k_gs_base = gdb.k_gs_base;
        let fx = &mut next.fx;
        for (st, bytes) in fx.st.iter_mut().zip(core.st.iter()) {
            let mut wide = [0u8; 16];
            wide[..10].copy_from_slice(bytes);
            *st = u128::from_le_bytes(wide);
        }
        fx.fcw = core.fpu.fctrl as u16;
        fx.fsw = core.fpu.fstat as u16;
        // Only a change of the tag word is written: it holds less than the registers.
        if core.fpu.ftag != u32::from(self.fx.full_tag_word()) {
            fx.set_full_tag_word(core.fpu.ftag as u16);
        }
        fx.fip = (self.fx.fip & !0xffff_ffff) | u64::from(core.fpu.fioff);
        fx.fdp = (self.fx.fdp & !0xffff_ffff) | u64::from(core.fpu.fooff);
        fx.fop = core.fpu.fop as u16;
        fx.xmm = core.xmm;
        fx.mxcsr = core.mxcsr;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> VcpuState {
        let mut fx = FxState::default();
        fx.xmm[3] = 0x1234_5678_9abc_def0_0fed_cba9_8765_4321;
        fx.st[1] = 0x3fff_8000_0000_0000_0000;
        let mut sregs = SystemRegisters::default();
        sregs.cs.selector = 0x18;
        sregs.fs.base = 0xffff_8880_0000_0000;
        sregs.cr0 = 0x8001_0011;
        sregs.cr3 = 0x6000;
        sregs.efer = 0xd00;
        VcpuState {
            regs: GeneralRegisters {
                gpr: std::array::from_fn(|i| 0x100 + i as u64),
                rip: 0xffff_06cd,
                rflags: 0x46,
            },
            sregs,
            fx,
            k_gs_base: 0x7777,
        }
    }

    #[test]
    fn the_g_packet_carries_the_system_registers_after_sse() {
        let gdb = state().to_gdb();
        let mut bytes = Vec::new();
        gdb.gdb_serialize(|b| bytes.push(b.unwrap()));
        assert_eq!(bytes.len(), CORE_BYTES + 72);
        // rbx is gdb's second register and Umbra's fourth.
        assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 0x103);
        let system =
            |i: usize| u64::from_le_bytes(bytes[CORE_BYTES + 8 * i..][..8].try_into().unwrap());
        assert_eq!(system(0), 0xffff_8880_0000_0000);
        assert_eq!(system(2), 0x7777);
        assert_eq!(system(3), 0x8001_0011);
        assert_eq!(system(5), 0x6000);
        assert_eq!(system(8), 0xd00);
        let mut back = UmbraRegisters::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, gdb);
        assert!(back.gdb_deserialize(&bytes[1..]).is_err());
    }

    #[test]
    fn writing_back_what_gdb_read_changes_nothing() {
        let state = state();
        assert_eq!(state.with_gdb(&state.to_gdb()), state);
    }

    #[test]
    fn gdb_writes_reach_rip_and_the_control_registers() {
        let state = state();
        let mut gdb = state.to_gdb();
        gdb.core.rip = 0x1000;
        gdb.core.regs[1] = 0xbbbb;
        gdb.cr4 = 0x20;
        gdb.k_gs_base = 1;
        let next = state.with_gdb(&gdb);
        assert_eq!(next.regs.rip, 0x1000);
        assert_eq!(next.regs.gpr[3], 0xbbbb);
        assert_eq!(next.sregs.cr4, 0x20);
        assert_eq!(next.k_gs_base, 1);
        assert_eq!(next.sregs.cs, state.sregs.cs);
    }
}
