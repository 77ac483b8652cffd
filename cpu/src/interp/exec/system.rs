//! System instructions: control and debug registers, descriptor tables, MSRs, CPUID, the
//! time-stamp counter, port I/O, HLT, interrupt-flag control, and cache and TLB maintenance.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use umbra_mmu::paging::PagingMode;

use crate::interp::alu::ZF;
use crate::interp::exception::{self, Exception};
use crate::interp::msr::efer;
use crate::interp::operands::size_mask;
use crate::interp::segmentation::{SegReg, selector_error};
use crate::interp::{Interpreter, MAXPHYADDR, StepEvent, cpuid};
use crate::state::{CpuMode, DescriptorTable, RFLAGS_AC, RFLAGS_IF, Segment};

/// CR3 bit 63 with CR4.PCIDE = 1: keep the TLB entries of the new PCID.
const CR3_NO_FLUSH: u64 = 1 << 63;

/// CR0 bits.
mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
    /// Every bit software may set.
    pub const WRITABLE: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

/// CR4 bits.
mod cr4 {
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PAE: u64 = 1 << 5;
    pub const PCIDE: u64 = 1 << 17;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    /// The bits of features the CPU advertises: VME through OSXMMEXCPT, PCIDE, SMEP and SMAP.
    pub const WRITABLE: u64 = 0x7ff | PCIDE | SMEP | SMAP;
    /// Changing any of these changes how page tables are read.
    pub const PAGING: u64 = (1 << 4) | PAE | (1 << 7) | SMEP | SMAP;
}

impl Interpreter {
    /// Runs `instruction` if it is a system instruction.
    pub(super) fn execute_system(
        &mut self,
        instruction: &Instruction,
    ) -> Result<Option<()>, Exception> {
        use Mnemonic::*;
        let i = instruction;
        match i.mnemonic() {
            Mov => self.mov_control(i)?,
            Lgdt | Lidt => {
                self.require_cpl0()?;
                let table = self.read_table_register(i)?;
                if i.mnemonic() == Lgdt {
                    self.sregs.gdt = table;
                } else {
                    self.sregs.idt = table;
                }
            }
            Sgdt | Sidt => {
                let table = if i.mnemonic() == Sgdt {
                    self.sregs.gdt
                } else {
                    self.sregs.idt
                };
                let offset = self.effective_offset(i);
                let seg = Self::memory_segment(i);
                let base_size = if self.mode() == CpuMode::Long { 8 } else { 4 };
                self.write_mem(seg, offset, 2, table.limit.into())?;
                self.write_mem(seg, offset.wrapping_add(2), base_size, table.base)?;
            }
            Lldt => {
                self.require_protected_cpl0()?;
                let selector = self.read_operand(i, 0)? as u16;
                self.sregs.ldtr = self.system_segment(selector, &[0x2])?;
            }
            Ltr => {
                self.require_protected_cpl0()?;
                let selector = self.read_operand(i, 0)? as u16;
                let types: &[u8] = if self.mode() == CpuMode::Long {
                    &[0x9]
                } else {
                    &[0x1, 0x9]
                };
                let mut tr = self.system_segment(selector, types)?;
                if tr.unusable {
                    return Err(Exception::gp(0));
                }
                // Mark the TSS busy in its descriptor, and in TR.
                tr.type_ |= 0x2;
                let address = self.sregs.gdt.base + u64::from(selector & 0xfff8) + 5;
                let mut byte = [0u8];
                self.read_system(address, &mut byte)?;
                self.write_system(address, &[byte[0] | 0x2])?;
                self.sregs.tr = tr;
            }
            Verr | Verw => {
                if self.mode() == CpuMode::Real || self.v86() {
                    return Err(Exception::ud());
                }
                let selector = self.read_operand(i, 0)? as u16;
                let accessible = self.verify_segment(selector, i.mnemonic() == Verw)?;
                if accessible {
                    self.regs.rflags |= ZF;
                } else {
                    self.regs.rflags &= !ZF;
                }
            }
            Sldt | Str => {
                if self.mode() == CpuMode::Real || self.v86() {
                    return Err(Exception::ud());
                }
                let selector = if i.mnemonic() == Sldt {
                    self.sregs.ldtr.selector
                } else {
                    self.sregs.tr.selector
                };
                self.write_operand(i, 0, selector.into())?;
            }
            Lmsw => {
                self.require_cpl0()?;
                let value = self.read_operand(i, 0)? & 0xf;
                // LMSW sets PE but never clears it.
                let pe = self.sregs.cr0 & cr0::PE;
                let new = (self.sregs.cr0 & !0xf) | value | pe;
                self.write_cr0(new)?;
            }
            Smsw => {
                let value = self.sregs.cr0 & size_mask(Self::operand_size(i, 0));
                self.write_operand(i, 0, value)?;
            }
            Clts => {
                self.require_cpl0()?;
                self.sregs.cr0 &= !cr0::TS;
            }
            Invlpg => {
                self.require_cpl0()?;
                let offset = self.effective_offset(i);
                let seg = Self::memory_segment(i);
                let base = match (self.mode(), seg) {
                    (CpuMode::Long, SegReg::Fs | SegReg::Gs) => self.segment(seg).base,
                    (CpuMode::Long, _) => 0,
                    _ => self.segment(seg).base,
                };
                self.mmu
                    .invlpg(umbra_mmu::addr::Gva(base.wrapping_add(offset)));
            }
            Wbinvd | Invd => self.require_cpl0()?,
            Invpcid => self.invpcid(i)?,
            Cpuid => {
                let leaf = self.reg(Register::EAX) as u32;
                let subleaf = self.reg(Register::ECX) as u32;
                let [a, b, c, d] = cpuid::cpuid(leaf, subleaf);
                self.set_reg(Register::EAX, a.into());
                self.set_reg(Register::EBX, b.into());
                self.set_reg(Register::ECX, c.into());
                self.set_reg(Register::EDX, d.into());
            }
            Rdmsr => {
                self.require_cpl0()?;
                let value = self.read_msr(self.reg(Register::ECX) as u32)?;
                self.set_reg(Register::EAX, value & 0xffff_ffff);
                self.set_reg(Register::EDX, value >> 32);
            }
            Wrmsr => {
                self.require_cpl0()?;
                let value = (self.reg(Register::EDX) << 32) | self.reg(Register::EAX);
                self.write_msr(self.reg(Register::ECX) as u32, value)?;
            }
            Rdtsc | Rdtscp => {
                if self.sregs.cr4 & cr4::TSD != 0 && self.cpl != 0 {
                    return Err(Exception::gp(0));
                }
                let tsc = self.tsc();
                self.set_reg(Register::EAX, tsc & 0xffff_ffff);
                self.set_reg(Register::EDX, tsc >> 32);
                if i.mnemonic() == Rdtscp {
                    self.set_reg(Register::ECX, self.msr.tsc_aux);
                }
            }
            Rdpid => {
                let value = self.msr.tsc_aux;
                self.write_operand(i, 0, value)?;
            }
            In => {
                let port = self.read_operand(i, 1)? as u16;
                let size = Self::operand_size(i, 0);
                self.check_io_permission(port, size)?;
                let mut data = [0u8; 4];
                self.io.pio_read(port, &mut data[..size]);
                self.write_operand(i, 0, u32::from_le_bytes(data).into())?;
                self.event = StepEvent::Io;
            }
            Out => {
                let port = self.read_operand(i, 0)? as u16;
                let size = Self::operand_size(i, 1);
                self.check_io_permission(port, size)?;
                let value = self.read_operand(i, 1)?;
                self.io.pio_write(port, &value.to_le_bytes()[..size]);
                self.event = StepEvent::Io;
            }
            Hlt => {
                self.require_cpl0()?;
                self.halted = true;
                self.event = StepEvent::Halt;
            }
            // SMAP's override (CPUID.7.0:EBX.SMAP is advertised): #UD outside CPL 0 and in
            // real and virtual-8086 mode.
            Stac | Clac => {
                if self.mode() == CpuMode::Real || self.v86() || self.cpl != 0 {
                    return Err(Exception::ud());
                }
                if i.mnemonic() == Stac {
                    self.regs.rflags |= RFLAGS_AC;
                } else {
                    self.regs.rflags &= !RFLAGS_AC;
                }
            }
            Cli => {
                self.check_interrupt_flag_access()?;
                self.regs.rflags &= !RFLAGS_IF;
            }
            Sti => {
                self.check_interrupt_flag_access()?;
                if self.regs.rflags & RFLAGS_IF == 0 {
                    self.interrupt_shadow = true;
                }
                self.regs.rflags |= RFLAGS_IF;
            }
            Swapgs => {
                if self.mode() != CpuMode::Long {
                    return Err(Exception::ud());
                }
                self.require_cpl0()?;
                std::mem::swap(&mut self.sregs.gs.base, &mut self.msr.kernel_gs_base);
            }
            Pause | Lfence | Mfence | Sfence => {}
            Clflush | Clflushopt => {
                // No caches to flush, but the address must be one the code may read.
                let offset = self.effective_offset(i);
                self.resolve(Self::memory_segment(i), offset, 1, false)?;
            }
            _ => return Ok(None),
        }
        Ok(Some(()))
    }

    /// #GP(0) unless at CPL 0 (and not in virtual-8086 mode).
    fn require_cpl0(&self) -> Result<(), Exception> {
        if self.cpl != 0 || self.v86() {
            return Err(Exception::gp(0));
        }
        Ok(())
    }

    /// #UD in real and virtual-8086 mode, #GP(0) above CPL 0.
    fn require_protected_cpl0(&self) -> Result<(), Exception> {
        if self.mode() == CpuMode::Real || self.v86() {
            return Err(Exception::ud());
        }
        self.require_cpl0()
    }

    /// CLI and STI: allowed when CPL <= IOPL (always in real mode).
    fn check_interrupt_flag_access(&self) -> Result<(), Exception> {
        if self.mode() != CpuMode::Real && self.cpl > self.iopl() {
            return Err(Exception::gp(0));
        }
        Ok(())
    }

    /// The I/O permission check of IN, OUT, INS and OUTS (SDM Vol. 1, 19.5): above IOPL, or
    /// in virtual-8086 mode, every port accessed must be allowed by the TSS's I/O bitmap.
    pub(crate) fn check_io_permission(&mut self, port: u16, size: usize) -> Result<(), Exception> {
        if self.mode() == CpuMode::Real || (!self.v86() && self.cpl <= self.iopl()) {
            return Ok(());
        }
        let tr = self.sregs.tr;
        let tss32 = !tr.unusable && matches!(tr.type_, 0x9 | 0xb);
        if !tss32 || tr.limit < 103 {
            return Err(Exception::gp(0));
        }
        let mut base = [0u8; 2];
        self.read_system(tr.base + 102, &mut base)?;
        let byte = u64::from(u16::from_le_bytes(base)) + u64::from(port / 8);
        if byte + 1 > u64::from(tr.limit) {
            return Err(Exception::gp(0));
        }
        let mut bits = [0u8; 2];
        self.read_system(tr.base + byte, &mut bits)?;
        let mask = ((1u32 << size) - 1) << (port % 8);
        if u32::from(u16::from_le_bytes(bits)) & mask != 0 {
            return Err(Exception::gp(0));
        }
        Ok(())
    }

    /// VERR's and VERW's test (SDM Vol. 2B): whether the segment `selector` names is a code
    /// or data segment that the CPL and the selector's RPL may read (a data segment, or a
    /// readable code segment; a conforming one whatever the privilege) or, with `write`,
    /// write (a writable data segment). A null selector, one past its table's limit or into
    /// a missing LDT, and a system segment are not; the P bit is not looked at. Only a fault
    /// reading the descriptor itself (#PF) is raised.
    fn verify_segment(&mut self, selector: u16, write: bool) -> Result<bool, Exception> {
        if selector & 0xfffc == 0 {
            return Ok(false);
        }
        let descriptor = match self.read_descriptor(selector) {
            Ok(descriptor) => descriptor,
            Err(fault)
                if fault.vector == exception::vector::GP
                    && fault.error_code == Some(selector_error(selector)) =>
            {
                return Ok(false);
            }
            Err(fault) => return Err(fault),
        };
        if !descriptor.s() {
            return Ok(false);
        }
        let rpl = (selector & 3) as u8;
        let privileged = self.cpl <= descriptor.dpl() && rpl <= descriptor.dpl();
        Ok(if write {
            privileged && descriptor.is_writable_data()
        } else {
            let readable_code = descriptor.type_() & 0x2 != 0;
            match (descriptor.is_code(), descriptor.is_conforming()) {
                (false, _) => privileged,
                (true, true) => readable_code,
                (true, false) => privileged && readable_code,
            }
        })
    }

    /// LGDT and LIDT's operand: a 16-bit limit and a 24-, 32- or 64-bit base.
    fn read_table_register(&mut self, i: &Instruction) -> Result<DescriptorTable, Exception> {
        let offset = self.effective_offset(i);
        let seg = Self::memory_segment(i);
        let limit = self.read_mem(seg, offset, 2)? as u16;
        let long = self.mode() == CpuMode::Long;
        let base = self.read_mem(seg, offset.wrapping_add(2), if long { 8 } else { 4 })?;
        let base = match i.code().op_code().operand_size() {
            _ if long => base,
            16 => base & 0xff_ffff,
            _ => base & 0xffff_ffff,
        };
        Ok(DescriptorTable { base, limit })
    }

    /// The LDT or TSS descriptor LLDT or LTR loads: from the GDT, of one of `types`, 16 bytes
    /// in IA-32e mode. A null selector gives an unusable register (LLDT only).
    fn system_segment(&mut self, selector: u16, types: &[u8]) -> Result<Segment, Exception> {
        if selector & 0xfffc == 0 {
            return Ok(Segment {
                selector,
                unusable: true,
                ..Segment::default()
            });
        }
        let error = selector_error(selector);
        if selector & 4 != 0 {
            return Err(Exception::gp(error));
        }
        let descriptor = self.read_descriptor(selector)?;
        if descriptor.s() || !types.contains(&descriptor.type_()) {
            return Err(Exception::gp(error));
        }
        if !descriptor.present() {
            return Err(Exception::np(error));
        }
        let mut segment = descriptor.to_segment(selector);
        if self.mode() == CpuMode::Long {
            let high_address = self.sregs.gdt.base + u64::from(selector & 0xfff8) + 8;
            let high = self.read_system_u64(high_address)?;
            segment.base |= (high & 0xffff_ffff) << 32;
        }
        Ok(segment)
    }

    /// MOV to or from a control or debug register; `None` for other MOVs.
    fn mov_control(&mut self, i: &Instruction) -> Result<(), Exception> {
        let is_control = |r: Register| r.is_cr() || r.is_dr();
        let (to_control, control) = match (i.op0_kind(), i.op1_kind()) {
            (OpKind::Register, OpKind::Register) if is_control(i.op0_register()) => {
                (true, i.op0_register())
            }
            (OpKind::Register, OpKind::Register) if is_control(i.op1_register()) => {
                (false, i.op1_register())
            }
            _ => return Err(Exception::ud()),
        };
        self.require_cpl0()?;
        if control.is_dr() {
            return self.mov_debug(i, to_control, control);
        }
        if to_control {
            let value = self.reg(i.op1_register());
            match control {
                Register::CR0 => self.write_cr0(value),
                Register::CR2 => {
                    self.sregs.cr2 = value;
                    Ok(())
                }
                Register::CR3 => self.write_cr3(value),
                Register::CR4 => self.write_cr4(value),
                Register::CR8 if self.mode() == CpuMode::Long => {
                    if value & !0xf != 0 {
                        return Err(Exception::gp(0));
                    }
                    self.sregs.cr8 = value;
                    Ok(())
                }
                _ => Err(Exception::ud()),
            }
        } else {
            let value = match control {
                Register::CR0 | Register::CR2 | Register::CR3 | Register::CR4 => {
                    self.control_registers()[control.number()]
                }
                Register::CR8 if self.mode() == CpuMode::Long => self.sregs.cr8,
                _ => return Err(Exception::ud()),
            };
            self.set_reg(i.op0_register(), value);
            Ok(())
        }
    }

    /// MOV to or from DR0-DR7.
    fn mov_debug(
        &mut self,
        i: &Instruction,
        to: bool,
        register: Register,
    ) -> Result<(), Exception> {
        let mut n = register as usize - Register::DR0 as usize;
        if n == 4 || n == 5 {
            if self.sregs.cr4 & cr4::DE != 0 {
                return Err(Exception::ud());
            }
            n += 2;
        }
        if n > 7 {
            return Err(Exception::ud());
        }
        if to {
            let value = self.reg(i.op1_register());
            if (n == 6 || n == 7) && value >> 32 != 0 {
                return Err(Exception::gp(0));
            }
            self.dr[n] = match n {
                6 => (value | 0xffff_0ff0) & !(1 << 12),
                7 => (value | 0x400) & !(0x3 << 14) & !(1 << 12),
                _ => value,
            };
        } else {
            self.set_reg(i.op0_register(), self.dr[n]);
        }
        Ok(())
    }

    /// MOV to CR0 with the SDM's checks, entering or leaving IA-32e mode as paging changes.
    pub(crate) fn write_cr0(&mut self, value: u64) -> Result<(), Exception> {
        if value >> 32 != 0 {
            return Err(Exception::gp(0));
        }
        let value = (value & cr0::WRITABLE) | cr0::ET;
        if (value & cr0::PG != 0 && value & cr0::PE == 0)
            || (value & cr0::NW != 0 && value & cr0::CD == 0)
        {
            return Err(Exception::gp(0));
        }
        let old = self.sregs.cr0;
        let mut new_efer = self.sregs.efer;
        let paging_on = value & cr0::PG != 0 && old & cr0::PG == 0;
        let paging_off = value & cr0::PG == 0 && old & cr0::PG != 0;
        if paging_on && self.sregs.efer & efer::LME != 0 {
            if self.sregs.cr4 & cr4::PAE == 0 || self.sregs.cs.l {
                return Err(Exception::gp(0));
            }
            new_efer |= efer::LMA;
        }
        if paging_off && self.sregs.efer & efer::LMA != 0 {
            if self.mode() == CpuMode::Long {
                return Err(Exception::gp(0));
            }
            new_efer &= !efer::LMA;
        }
        let pae_legacy =
            value & cr0::PG != 0 && self.sregs.cr4 & cr4::PAE != 0 && new_efer & efer::LMA == 0;
        let reload_pdptrs = pae_legacy && (old ^ value) & (cr0::PG | cr0::CD | cr0::NW) != 0;
        if reload_pdptrs {
            self.load_pdptrs(self.mmu.walker().cr3())?;
        }
        self.sregs.cr0 = value;
        self.sregs.efer = new_efer;
        self.update_paging_role();
        Ok(())
    }

    /// MOV to CR3: reserved bits above MAXPHYADDR are #GP in IA-32e mode; PAE paging reloads
    /// the PDPTE registers.
    ///
    /// With CR4.PCIDE = 1, bits 11:0 are the PCID and bit 63 asks to keep the new PCID's TLB
    /// entries; CR3 itself never holds bit 63. The shadow MMU is coherent with the guest's
    /// page tables at all times (see `umbra_mmu::shadow`), so a flush the CR3 write asks for has
    /// nothing stale to drop: the write only switches roots.
    fn write_cr3(&mut self, value: u64) -> Result<(), Exception> {
        let mode = self.mmu.walker().role().paging_mode();
        let value = if self.sregs.efer & efer::LMA != 0 {
            let value = if self.sregs.cr4 & cr4::PCIDE != 0 {
                value & !CR3_NO_FLUSH
            } else {
                value
            };
            if value >> MAXPHYADDR != 0 {
                return Err(Exception::gp(0));
            }
            value
        } else {
            value & 0xffff_ffff
        };
        if mode == PagingMode::Pae {
            self.load_pdptrs(value)?;
        }
        self.mmu.set_cr3(value);
        Ok(())
    }

    /// MOV to CR4 with the SDM's checks.
    fn write_cr4(&mut self, value: u64) -> Result<(), Exception> {
        if value & !cr4::WRITABLE != 0 {
            return Err(Exception::gp(0));
        }
        let old = self.sregs.cr4;
        let long = self.sregs.efer & efer::LMA != 0;
        if long && value & cr4::PAE == 0 {
            return Err(Exception::gp(0));
        }
        let pcid_on = value & cr4::PCIDE != 0 && old & cr4::PCIDE == 0;
        if pcid_on && (!long || self.mmu.walker().cr3() & 0xfff != 0) {
            return Err(Exception::gp(0));
        }
        let paging = self.sregs.cr0 & cr0::PG != 0;
        if paging && !long && value & cr4::PAE != 0 && (old ^ value) & cr4::PAGING != 0 {
            self.load_pdptrs(self.mmu.walker().cr3())?;
        }
        self.sregs.cr4 = value;
        self.update_paging_role();
        if old & cr4::PCIDE != 0 && value & cr4::PCIDE == 0 {
            // Clearing CR4.PCIDE invalidates every translation, global ones too (a change
            // of CR4.PGE, the role's, does as well).
            self.mmu.drop_global();
        }
        Ok(())
    }

    /// INVPCID: types 0 (one address), 1 (one PCID), 2 (all, with globals) and 3 (all but
    /// globals), with the SDM's checks. The TLB entries it names are dropped; the shadow pages
    /// need nothing, being coherent.
    fn invpcid(&mut self, i: &Instruction) -> Result<(), Exception> {
        if self.mode() == CpuMode::Real || self.v86() {
            return Err(Exception::ud());
        }
        self.require_cpl0()?;
        let kind = self.reg(i.op0_register());
        let offset = self.effective_offset(i);
        let seg = Self::memory_segment(i);
        let pcid = self.read_mem(seg, offset, 8)?;
        let address = self.read_mem(seg, offset.wrapping_add(8), 8)?;
        if kind > 3 || pcid > 0xfff {
            return Err(Exception::gp(0));
        }
        match kind {
            0 if !self.canonical(address) => return Err(Exception::gp(0)),
            0 => self.mmu.invlpg(umbra_mmu::addr::Gva(address)),
            _ => self.mmu.flush_tlb(),
        }
        Ok(())
    }

    /// Loads the PAE PDPTE registers from `cr3`; #GP(0) if they are invalid.
    fn load_pdptrs(&mut self, cr3: u64) -> Result<(), Exception> {
        let pdptrs = self
            .mmu
            .walker()
            .load_pdptrs(cr3, &*self.memslots)
            .map_err(|_| Exception::gp(0))?;
        self.mmu.set_pdptrs(pdptrs);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
