//! Delivering exceptions and interrupts: through the IVT in real mode, through the IDT in
//! protected and IA-32e mode (SDM Vol. 3A, 6.12 and 6.14), with the stack switches of
//! privilege changes and IST, and the double- and triple-fault rules of Table 6-5.
//!
//! A delivery first reads and checks everything it needs (gate, target code segment, new
//! stack) and writes the whole stack frame, and only then commits the new CS, RIP, SS, RSP and
//! RFLAGS; a fault on the way leaves the vCPU as it was, so the fault can be delivered in turn.

use super::Interpreter;
use super::exception::{Combined, Exception, combine, vector};
use super::segmentation::{Descriptor, SegReg, selector_error};
use crate::state::{
    CpuMode, RFLAGS_AC, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_TF, RFLAGS_VM, Segment,
};
use umbra_mmu::walker::{Access, AccessKind, Privilege};

/// Where an event came from, which decides the checks and the error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// An exception raised by the processor.
    Exception,
    /// INT n, INT3 or INTO: the gate's DPL is checked against the CPL.
    Software,
}

impl Source {
    /// The EXT bit of error codes for faults during delivery.
    fn ext(self) -> u32 {
        match self {
            Source::Software => 0,
            Source::Exception => 1,
        }
    }
}

/// The processor shut down: an exception while delivering a double fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TripleFault;

/// An IDT gate, decoded.
struct Gate {
    offset: u64,
    selector: u16,
    type_: u8,
    dpl: u8,
    present: bool,
    ist: u8,
}

/// System descriptor types of IDT gates.
mod gate {
    pub const TASK: u8 = 0x5;
    pub const INTERRUPT_16: u8 = 0x6;
    pub const TRAP_16: u8 = 0x7;
    pub const INTERRUPT_32: u8 = 0xe;
    pub const TRAP_32: u8 = 0xf;
}

impl Interpreter {
    /// Delivers `exception`, raised by the instruction at RIP, combining it with any exception
    /// its delivery raises per Table 6-5.
    pub(crate) fn raise(&mut self, exception: Exception) -> Result<(), TripleFault> {
        // The RFLAGS image pushed for a fault has RF set, so that the IRET back to the
        // faulting instruction does not take an instruction breakpoint on it again (SDM Vol.
        // 3B, 18.3.1.1); the delivery then clears RF in RFLAGS itself.
        self.regs.rflags |= RFLAGS_RF;
        self.deliver_combined(exception)
    }

    /// Delivers a trap-class exception raised after the instruction that just completed (RIP
    /// is already past it): the pushed RF is what the instruction left.
    pub(crate) fn trap(&mut self, vector: u8) -> Result<(), TripleFault> {
        self.deliver_combined(Exception::new(vector))
    }

    /// Delivers `exception` at RIP, combining it with any exception its delivery raises per
    /// Table 6-5.
    fn deliver_combined(&mut self, exception: Exception) -> Result<(), TripleFault> {
        let mut current = exception;
        loop {
            let rip = self.regs.rip;
            match self.deliver(current.vector, current.error_code, Source::Exception, rip) {
                Ok(()) => {
                    if let Some(address) = current.fault_address {
                        self.sregs.cr2 = address;
                    }
                    return Ok(());
                }
                Err(second) => match combine(current.class(), second.class()) {
                    Combined::Second => current = second,
                    Combined::DoubleFault => current = Exception::with_code(vector::DF, 0),
                    Combined::TripleFault => return Err(TripleFault),
                },
            }
        }
    }

    /// Delivers event `vector` with `error_code`, returning to `return_rip`.
    pub(crate) fn deliver(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        source: Source,
        return_rip: u64,
    ) -> Result<(), Exception> {
        self.interrupt_shadow = false;
        match self.mode() {
            CpuMode::Real => self.deliver_real(vector, return_rip),
            CpuMode::Long | CpuMode::Compatibility => {
                self.deliver_long(vector, error_code, source, return_rip)
            }
            CpuMode::Protected => self.deliver_protected(vector, error_code, source, return_rip),
        }
    }

    /// Real mode: FLAGS, CS and IP on the stack, then CS:IP from the IVT.
    fn deliver_real(&mut self, vector: u8, return_rip: u64) -> Result<(), Exception> {
        let entry = u64::from(vector) * 4;
        if entry + 3 > u64::from(self.sregs.idt.limit) {
            return Err(Exception::gp(0));
        }
        let mut bytes = [0u8; 4];
        self.read_system(self.sregs.idt.base + entry, &mut bytes)?;
        let offset = u16::from_le_bytes([bytes[0], bytes[1]]);
        let selector = u16::from_le_bytes([bytes[2], bytes[3]]);
        let flags = self.regs.rflags;
        let cs = self.sregs.cs.selector;
        let saved_rsp = self.regs.gpr[4];
        let pushed = self
            .push(flags & 0xffff, 2)
            .and_then(|()| self.push(cs.into(), 2))
            .and_then(|()| self.push(return_rip & 0xffff, 2));
        if let Err(e) = pushed {
            self.regs.gpr[4] = saved_rsp;
            return Err(e);
        }
        self.sregs.cs.selector = selector;
        self.sregs.cs.base = u64::from(selector) << 4;
        self.regs.rip = offset.into();
        self.regs.rflags &= !(RFLAGS_IF | RFLAGS_TF | RFLAGS_AC | RFLAGS_RF);
        Ok(())
    }

    /// Reads and decodes the IDT gate for `vector` (8- or 16-byte gates).
    fn read_gate(&mut self, vector: u8, source: Source, long: bool) -> Result<Gate, Exception> {
        let idt_error = (u32::from(vector) << 3) | 2 | source.ext();
        let size = if long { 16 } else { 8 };
        let entry = u64::from(vector) * size;
        if entry + size - 1 > u64::from(self.sregs.idt.limit) {
            return Err(Exception::gp(idt_error));
        }
        let mut bytes = [0u8; 16];
        self.read_system(self.sregs.idt.base + entry, &mut bytes[..size as usize])?;
        let low = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let high = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
        let mut offset = (low & 0xffff) | ((low >> 32) & 0xffff_0000);
        if long {
            offset |= (high & 0xffff_ffff) << 32;
        }
        let gate = Gate {
            offset,
            selector: (low >> 16) as u16,
            type_: ((low >> 40) & 0xf) as u8,
            dpl: ((low >> 45) & 3) as u8,
            present: low & (1 << 47) != 0,
            ist: if long { ((low >> 32) & 7) as u8 } else { 0 },
        };
        let valid_type = if long {
            matches!(gate.type_, gate::INTERRUPT_32 | gate::TRAP_32)
        } else {
            matches!(
                gate.type_,
                gate::INTERRUPT_16 | gate::TRAP_16 | gate::INTERRUPT_32 | gate::TRAP_32
            )
        };
        // Task gates are valid in legacy mode, but task switches are not implemented: they are
        // refused as an invalid gate would be, and listed among the interpreter's gaps.
        if !valid_type || gate.type_ == gate::TASK || low & (1 << 44) != 0 {
            return Err(Exception::gp(idt_error));
        }
        if source == Source::Software && gate.dpl < self.cpl {
            return Err(Exception::gp(idt_error));
        }
        if !gate.present {
            return Err(Exception::np(idt_error));
        }
        Ok(gate)
    }

    /// Reads and checks the code segment an IDT gate leads to.
    fn gate_target(&mut self, gate: &Gate, source: Source) -> Result<Descriptor, Exception> {
        let ext = source.ext();
        if gate.selector & 0xfffc == 0 {
            return Err(Exception::gp(ext));
        }
        let error = selector_error(gate.selector) | ext;
        let descriptor = self
            .read_descriptor(gate.selector)
            .map_err(|_| Exception::gp(error))?;
        if !descriptor.is_code() || descriptor.dpl() > self.cpl {
            return Err(Exception::gp(error));
        }
        if !descriptor.present() {
            return Err(Exception::np(error));
        }
        Ok(descriptor)
    }

    /// Protected mode (16- and 32-bit gates), from protected or virtual-8086 mode.
    fn deliver_protected(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        source: Source,
        return_rip: u64,
    ) -> Result<(), Exception> {
        let gate = self.read_gate(vector, source, false)?;
        let target = self.gate_target(&gate, source)?;
        let slot = if matches!(gate.type_, gate::INTERRUPT_32 | gate::TRAP_32) {
            4
        } else {
            2
        };
        let v86 = self.v86();
        let new_cpl = if target.is_conforming() {
            self.cpl
        } else {
            target.dpl()
        };
        if v86 && new_cpl != 0 {
            return Err(Exception::gp(selector_error(gate.selector) | source.ext()));
        }
        let old = self.sregs;
        let old_rsp = self.regs.gpr[4];
        let mut frame = Vec::with_capacity(10);
        let (new_ss, new_sp) = if new_cpl < self.cpl {
            let (ss_selector, sp) = self.tss_stack_legacy(new_cpl, source)?;
            let ss = self.checked_stack_segment(ss_selector, new_cpl, source)?;
            if v86 {
                frame.extend(
                    [
                        old.gs.selector,
                        old.fs.selector,
                        old.ds.selector,
                        old.es.selector,
                    ]
                    .map(u64::from),
                );
            }
            frame.extend([u64::from(old.ss.selector), old_rsp]);
            (ss, sp)
        } else {
            (old.ss, old_rsp)
        };
        frame.extend([self.regs.rflags, u64::from(old.cs.selector), return_rip]);
        if let Some(code) = error_code {
            frame.push(code.into());
        }
        let stack_mask = if new_ss.db { 0xffff_ffff } else { 0xffff };
        let frame_len = (frame.len() * slot) as u64;
        let new_sp = new_sp.wrapping_sub(frame_len) & stack_mask;
        let linear = new_ss.base.wrapping_add(new_sp) & 0xffff_ffff;
        self.write_frame(linear, &frame, slot, new_cpl)?;

        self.sregs.ss = new_ss;
        self.set_sp(new_sp, new_ss.db);
        self.set_code_segment(gate.selector, target, new_cpl);
        if v86 {
            for seg in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
                *self.segment_mut(seg) = Segment {
                    unusable: true,
                    ..Segment::default()
                };
            }
        }
        self.regs.rip = gate.offset & if slot == 4 { 0xffff_ffff } else { 0xffff };
        self.clear_delivery_flags(gate.type_);
        Ok(())
    }

    /// IA-32e mode (64-bit gates), from 64-bit or compatibility mode.
    fn deliver_long(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        source: Source,
        return_rip: u64,
    ) -> Result<(), Exception> {
        let gate = self.read_gate(vector, source, true)?;
        let target = self.gate_target(&gate, source)?;
        let error = selector_error(gate.selector) | source.ext();
        if !target.to_segment(gate.selector).l || target.to_segment(gate.selector).db {
            return Err(Exception::gp(error));
        }
        let new_cpl = if target.is_conforming() {
            self.cpl
        } else {
            target.dpl()
        };
        let old_rsp = self.regs.gpr[4];
        let mut rsp = if new_cpl < self.cpl {
            self.read_tss_u64(4 + u64::from(new_cpl) * 8, source)?
        } else {
            old_rsp
        };
        if gate.ist != 0 {
            rsp = self.read_tss_u64(36 + u64::from(gate.ist - 1) * 8, source)?;
        }
        if !self.canonical(rsp) {
            return Err(Exception::ss(source.ext()));
        }
        rsp &= !0xf;
        let mut frame = vec![
            u64::from(self.sregs.ss.selector),
            old_rsp,
            self.regs.rflags,
            u64::from(self.sregs.cs.selector),
            return_rip,
        ];
        if let Some(code) = error_code {
            frame.push(code.into());
        }
        let new_rsp = rsp.wrapping_sub(frame.len() as u64 * 8);
        self.write_frame(new_rsp, &frame, 8, new_cpl)?;

        if new_cpl < self.cpl {
            // The new SS is a null selector whose RPL is the new CPL (SDM 6.14.4).
            self.sregs.ss = Segment {
                selector: u16::from(new_cpl),
                unusable: true,
                dpl: new_cpl,
                ..Segment::default()
            };
        }
        self.regs.gpr[4] = new_rsp;
        self.set_code_segment(gate.selector, target, new_cpl);
        self.regs.rip = gate.offset;
        self.clear_delivery_flags(gate.type_);
        Ok(())
    }

    /// Clears what every delivery clears, and IF for interrupt gates.
    fn clear_delivery_flags(&mut self, gate_type: u8) {
        self.regs.rflags &= !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM);
        if matches!(gate_type, gate::INTERRUPT_16 | gate::INTERRUPT_32) {
            self.regs.rflags &= !RFLAGS_IF;
        }
    }

    /// Writes a stack frame: `values` in push order, `slot` bytes each, ending at `linear`
    /// (the new stack pointer's linear address), as accesses at `cpl`.
    fn write_frame(
        &mut self,
        linear: u64,
        values: &[u64],
        slot: usize,
        cpl: u8,
    ) -> Result<(), Exception> {
        let mut bytes = Vec::with_capacity(values.len() * slot);
        for value in values.iter().rev() {
            bytes.extend_from_slice(&value.to_le_bytes()[..slot]);
        }
        let privilege = if cpl == 3 {
            Privilege::User
        } else {
            Privilege::Supervisor
        };
        let access = Access::new(AccessKind::Write, privilege);
        self.watch_access(linear, bytes.len(), true);
        let first = self.translate(linear, access)?;
        let first_len = (0x1000 - (linear & 0xfff) as usize).min(bytes.len());
        let second = if first_len < bytes.len() {
            Some(self.translate(linear + first_len as u64, access)?)
        } else {
            None
        };
        self.write_mapped(&first, &bytes[..first_len]);
        if let Some(second) = second {
            self.write_mapped(&second, &bytes[first_len..]);
        }
        Ok(())
    }

    /// Reads the stack for `cpl` from a legacy 16- or 32-bit TSS.
    fn tss_stack_legacy(&mut self, cpl: u8, source: Source) -> Result<(u16, u64), Exception> {
        let tr = self.sregs.tr;
        let tss_error = selector_error(tr.selector) | source.ext();
        let bits32 = tr.type_ & 0x8 != 0;
        let (sp_offset, ss_offset, sp_len) = if bits32 {
            (4 + u64::from(cpl) * 8, 8 + u64::from(cpl) * 8, 4)
        } else {
            (2 + u64::from(cpl) * 4, 4 + u64::from(cpl) * 4, 2)
        };
        if ss_offset + 1 > u64::from(tr.limit) {
            return Err(Exception::ts(tss_error));
        }
        let mut sp = [0u8; 8];
        self.read_system(tr.base + sp_offset, &mut sp[..sp_len])?;
        let mut ss = [0u8; 2];
        self.read_system(tr.base + ss_offset, &mut ss)?;
        Ok((u16::from_le_bytes(ss), u64::from_le_bytes(sp)))
    }

    /// Reads a 64-bit field of the 64-bit TSS.
    fn read_tss_u64(&mut self, offset: u64, source: Source) -> Result<u64, Exception> {
        let tr = self.sregs.tr;
        if offset + 7 > u64::from(tr.limit) {
            return Err(Exception::ts(selector_error(tr.selector) | source.ext()));
        }
        self.read_system_u64(tr.base + offset)
    }

    /// Checks a stack segment a privilege change switches to (#TS on any problem).
    fn checked_stack_segment(
        &mut self,
        selector: u16,
        cpl: u8,
        source: Source,
    ) -> Result<Segment, Exception> {
        let error = selector_error(selector) | source.ext();
        if selector & 0xfffc == 0 || (selector & 3) as u8 != cpl {
            return Err(Exception::ts(error));
        }
        let descriptor = self
            .read_descriptor(selector)
            .map_err(|_| Exception::ts(error))?;
        if descriptor.dpl() != cpl || !descriptor.is_writable_data() {
            return Err(Exception::ts(error));
        }
        if !descriptor.present() {
            return Err(Exception::ss(error));
        }
        self.mark_descriptor_accessed(selector, descriptor)?;
        Ok(descriptor.accessed().to_segment(selector))
    }

    /// The stack pointer's width: 8 bytes in 64-bit mode, else by SS.B.
    pub(crate) fn stack_width(&self) -> usize {
        if self.mode() == CpuMode::Long {
            8
        } else if self.sregs.ss.db {
            4
        } else {
            2
        }
    }

    /// Sets the stack pointer: all of RSP with a 32-bit (zero-extended) or 64-bit stack, only SP
    /// with a 16-bit one.
    pub(crate) fn set_sp(&mut self, sp: u64, wide: bool) {
        let rsp = &mut self.regs.gpr[4];
        *rsp = if self.sregs.efer & (1 << 10) != 0 && self.sregs.cs.l {
            sp
        } else if wide {
            sp & 0xffff_ffff
        } else {
            (*rsp & !0xffff) | (sp & 0xffff)
        };
    }

    /// Pushes the low `size` bytes of `value`.
    pub(crate) fn push(&mut self, value: u64, size: usize) -> Result<(), Exception> {
        let width = self.stack_width();
        let mask = super::operands::size_mask(width);
        let sp = self.regs.gpr[4].wrapping_sub(size as u64) & mask;
        self.write_mem(SegReg::Ss, sp, size, value)?;
        self.set_sp(sp, width != 2);
        Ok(())
    }

    /// Reads `size` bytes `skip` bytes above the stack pointer, returning the value and the
    /// stack pointer just past it (the caller commits it when the whole instruction succeeds).
    pub(crate) fn peek_stack(&mut self, skip: u64, size: usize) -> Result<(u64, u64), Exception> {
        let mask = super::operands::size_mask(self.stack_width());
        let sp = self.regs.gpr[4].wrapping_add(skip) & mask;
        let value = self.read_mem(SegReg::Ss, sp, size)?;
        Ok((value, sp.wrapping_add(size as u64) & mask))
    }
}
