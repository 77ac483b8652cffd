//! Control transfer: jumps, calls and returns (near and far), conditional branches and loops,
//! software interrupts, IRET, and the fast system calls.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::interp::Interpreter;
use crate::interp::alu::{self, OF};
use crate::interp::delivery::Source;
use crate::interp::exception::{Exception, vector};
use crate::interp::operands::size_mask;
use crate::interp::segmentation::{Descriptor, SegReg, selector_error};
use crate::state::{
    CpuMode, RFLAGS_FIXED, RFLAGS_IF, RFLAGS_IOPL, RFLAGS_NT, RFLAGS_RF, RFLAGS_VIF, RFLAGS_VIP,
    RFLAGS_VM, Segment,
};

/// The flags IRET restores from the stack, before the CPL and IOPL rules.
const IRET_FLAGS: u64 = 0x3f_7fd7;

impl Interpreter {
    /// Runs `instruction` if it transfers control.
    pub(super) fn execute_control(
        &mut self,
        instruction: &Instruction,
    ) -> Result<Option<()>, Exception> {
        use Mnemonic::*;
        let i = instruction;
        match i.mnemonic() {
            Jmp => match i.op0_kind() {
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    self.far_jump(i.far_branch_selector(), i.far_branch32().into())?
                }
                OpKind::Memory if i.is_jmp_far_indirect() => {
                    let (selector, offset) = self.read_far_pointer(i)?;
                    self.far_jump(selector, offset)?;
                }
                _ => {
                    let target = self.branch_target(i)?;
                    self.jump_near(target)?;
                }
            },
            Call => match i.op0_kind() {
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let size = Self::far_operand_size(i);
                    self.far_call(i.far_branch_selector(), i.far_branch32().into(), size)?
                }
                OpKind::Memory if i.is_call_far_indirect() => {
                    let size = Self::far_operand_size(i);
                    let (selector, offset) = self.read_far_pointer(i)?;
                    self.far_call(selector, offset, size)?;
                }
                _ => {
                    let target = self.branch_target(i)?;
                    let size = i.stack_pointer_increment().unsigned_abs() as usize;
                    self.check_near_target(target)?;
                    self.push(self.next_rip, size)?;
                    self.next_rip = target;
                }
            },
            Ret => {
                let size = Self::return_size(i);
                let (target, sp) = self.peek_stack(0, size)?;
                self.check_near_target(target)?;
                let release = if i.op_count() == 1 {
                    u64::from(i.immediate16())
                } else {
                    0
                };
                let sp = sp.wrapping_add(release) & size_mask(self.stack_width());
                self.set_sp(sp, self.stack_width() != 2);
                self.next_rip = target;
            }
            Retf => self.far_return(i)?,
            Int => {
                if self.v86() && self.iopl() < 3 {
                    return Err(Exception::gp(0));
                }
                self.software_interrupt(i.immediate8(), Source::Software)?;
            }
            Int3 => self.software_interrupt(vector::BP, Source::Software)?,
            Into => {
                if self.mode() == CpuMode::Long {
                    return Err(Exception::ud());
                }
                if self.regs.rflags & OF != 0 {
                    self.software_interrupt(vector::OF, Source::Software)?;
                }
            }
            Int1 => self.software_interrupt(vector::DB, Source::Exception)?,
            Iret | Iretd | Iretq => self.iret(i)?,
            Syscall => self.syscall()?,
            Sysret | Sysretq => self.sysret(i)?,
            Sysenter => self.sysenter()?,
            Sysexit | Sysexitq => self.sysexit(i)?,
            _ => return Ok(None),
        }
        Ok(Some(()))
    }

    /// Jcc, JCXZ/JECXZ/JRCXZ, LOOP, LOOPE, LOOPNE.
    pub(super) fn conditional_branch(&mut self, i: &Instruction) -> Result<(), Exception> {
        let taken = if i.is_jcc_short_or_near() {
            alu::condition(i.condition_code() as u8 - 1, self.regs.rflags)
        } else {
            let count = match i.mnemonic() {
                Mnemonic::Jcxz => Register::CX,
                Mnemonic::Jecxz => Register::ECX,
                Mnemonic::Jrcxz => Register::RCX,
                _ => match i.op_code().address_size() {
                    16 => Register::CX,
                    32 => Register::ECX,
                    _ => Register::RCX,
                },
            };
            if i.is_jcx_short() {
                self.reg(count) == 0
            } else {
                let remaining = self.reg(count).wrapping_sub(1) & size_mask(count.size());
                self.set_reg(count, remaining);
                let zf = self.regs.rflags & alu::ZF != 0;
                remaining != 0
                    && match i.mnemonic() {
                        Mnemonic::Loope => zf,
                        Mnemonic::Loopne => !zf,
                        _ => true,
                    }
            }
        };
        if taken {
            let target = i.near_branch_target();
            self.jump_near(target)?;
        }
        Ok(())
    }

    /// The target of a near JMP or CALL: relative, or from a register or memory.
    fn branch_target(&mut self, i: &Instruction) -> Result<u64, Exception> {
        match i.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                Ok(i.near_branch_target())
            }
            _ => self.read_operand(i, 0),
        }
    }

    /// #GP(0) unless `target` is inside CS (or canonical, in 64-bit mode).
    fn check_near_target(&self, target: u64) -> Result<(), Exception> {
        let ok = if self.mode() == CpuMode::Long {
            self.canonical(target)
        } else {
            target <= u64::from(self.sregs.cs.limit)
        };
        if ok { Ok(()) } else { Err(Exception::gp(0)) }
    }

    /// A near jump to `target`.
    fn jump_near(&mut self, target: u64) -> Result<(), Exception> {
        self.check_near_target(target)?;
        self.next_rip = target;
        Ok(())
    }

    /// The size of each part of a far pointer in memory or on the stack.
    fn far_operand_size(i: &Instruction) -> usize {
        match i.op0_kind() {
            OpKind::FarBranch16 => 2,
            OpKind::FarBranch32 => 4,
            _ => i.memory_size().size() - 2,
        }
    }

    /// The size of the return address RET pops.
    fn return_size(i: &Instruction) -> usize {
        match i.code() {
            iced_x86::Code::Retnw | iced_x86::Code::Retnw_imm16 => 2,
            iced_x86::Code::Retnd | iced_x86::Code::Retnd_imm16 => 4,
            _ => 8,
        }
    }

    /// Reads an m16:16, m16:32 or m16:64 far pointer operand.
    fn read_far_pointer(&mut self, i: &Instruction) -> Result<(u16, u64), Exception> {
        let size = Self::far_operand_size(i);
        let offset_address = self.effective_offset(i);
        let seg = Self::memory_segment(i);
        let offset = self.read_mem(seg, offset_address, size)?;
        let selector = self.read_mem(seg, offset_address.wrapping_add(size as u64), 2)? as u16;
        Ok((selector, offset))
    }

    /// Checks a far JMP or CALL target in protected mode and returns its descriptor.
    fn far_target(&mut self, selector: u16) -> Result<Descriptor, Exception> {
        if selector & 0xfffc == 0 {
            return Err(Exception::gp(0));
        }
        let error = selector_error(selector);
        let descriptor = self.read_descriptor(selector)?;
        // Call gates, task gates and TSS targets (task switches) are not implemented: they
        // raise #GP as an invalid target would.
        if !descriptor.is_code() {
            return Err(Exception::gp(error));
        }
        let rpl = (selector & 3) as u8;
        let allowed = if descriptor.is_conforming() {
            descriptor.dpl() <= self.cpl
        } else {
            rpl <= self.cpl && descriptor.dpl() == self.cpl
        };
        if !allowed {
            return Err(Exception::gp(error));
        }
        if !descriptor.present() {
            return Err(Exception::np(error));
        }
        Ok(descriptor)
    }

    /// Loads CS for a far transfer at the same privilege level and sets the target offset.
    fn enter_code_segment(
        &mut self,
        selector: u16,
        offset: u64,
        operand_size: usize,
    ) -> Result<(), Exception> {
        if self.mode() == CpuMode::Real || self.v86() {
            let offset = offset & size_mask(operand_size);
            if offset > u64::from(self.sregs.cs.limit) {
                return Err(Exception::gp(0));
            }
            self.sregs.cs.selector = selector;
            self.sregs.cs.base = u64::from(selector) << 4;
            self.next_rip = offset;
            return Ok(());
        }
        let descriptor = self.far_target(selector)?;
        let segment = descriptor.to_segment(selector);
        let long = self.sregs.efer & (1 << 10) != 0 && segment.l;
        let offset = if long {
            offset
        } else {
            offset & size_mask(operand_size) & 0xffff_ffff
        };
        let within = if long {
            self.canonical(offset)
        } else {
            offset <= u64::from(segment.limit)
        };
        if !within {
            return Err(Exception::gp(0));
        }
        self.mark_descriptor_accessed(selector, descriptor)?;
        self.set_code_segment(selector, descriptor, self.cpl);
        self.next_rip = offset;
        Ok(())
    }

    /// JMP ptr16:16/32 and JMP m16:16/32/64.
    fn far_jump(&mut self, selector: u16, offset: u64) -> Result<(), Exception> {
        let size = if self.mode() == CpuMode::Long { 8 } else { 4 };
        self.enter_code_segment(selector, offset, size)
    }

    /// CALL ptr16:16/32 and CALL m16:16/32/64: push CS and the return address, then jump.
    fn far_call(&mut self, selector: u16, offset: u64, size: usize) -> Result<(), Exception> {
        let saved_rsp = self.regs.gpr[4];
        let return_cs = self.sregs.cs.selector;
        let return_rip = self.next_rip;
        let saved_cs = self.sregs.cs;
        let saved_cpl = self.cpl;
        let result = (|| {
            self.push(return_cs.into(), size)?;
            self.push(return_rip, size)?;
            self.enter_code_segment(selector, offset, size)
        })();
        if result.is_err() {
            self.regs.gpr[4] = saved_rsp;
            self.sregs.cs = saved_cs;
            self.cpl = saved_cpl;
        }
        result
    }

    /// RETF, to the same or an outer privilege level.
    fn far_return(&mut self, i: &Instruction) -> Result<(), Exception> {
        let size = match i.code() {
            iced_x86::Code::Retfw | iced_x86::Code::Retfw_imm16 => 2,
            iced_x86::Code::Retfd | iced_x86::Code::Retfd_imm16 => 4,
            _ => 8,
        };
        let release = if i.op_count() == 1 {
            u64::from(i.immediate16())
        } else {
            0
        };
        let (offset, _) = self.peek_stack(0, size)?;
        let (selector, _) = self.peek_stack(size as u64, size)?;
        let selector = selector as u16;
        let mask = size_mask(self.stack_width());
        let past = (self.regs.gpr[4].wrapping_add(2 * size as u64 + release)) & mask;
        if self.mode() == CpuMode::Real || self.v86() {
            self.enter_code_segment(selector, offset, size)?;
            self.set_sp(past, self.stack_width() != 2);
            return Ok(());
        }
        let rpl = (selector & 3) as u8;
        let descriptor = self.return_code_segment(selector)?;
        if rpl == self.cpl {
            self.mark_descriptor_accessed(selector, descriptor)?;
            self.set_code_segment(selector, descriptor, rpl);
            self.next_rip = offset & size_mask(size);
            self.set_sp(past, self.stack_width() != 2);
            return Ok(());
        }
        // Return to an outer level: SS:rSP follow the return address on the stack.
        let (new_sp, _) = self.peek_stack(2 * size as u64 + release, size)?;
        let (ss_selector, _) = self.peek_stack(3 * size as u64 + release, size)?;
        let ss_selector = ss_selector as u16;
        self.mark_descriptor_accessed(selector, descriptor)?;
        self.set_code_segment(selector, descriptor, rpl);
        self.load_outer_stack(ss_selector, new_sp.wrapping_add(release))?;
        self.next_rip = offset & size_mask(size);
        self.invalidate_data_segments();
        Ok(())
    }

    /// Reads and checks the code segment a far return or IRET returns to (SDM, RET and IRET
    /// operation): a non-null selector whose RPL is not below the CPL, naming a present code
    /// segment whose DPL equals the RPL (or, if conforming, is at most the RPL).
    fn return_code_segment(&mut self, selector: u16) -> Result<Descriptor, Exception> {
        let rpl = (selector & 3) as u8;
        let error = selector_error(selector);
        if selector & 0xfffc == 0 || rpl < self.cpl {
            return Err(Exception::gp(error));
        }
        let descriptor = self.read_descriptor(selector)?;
        let allowed = descriptor.is_code()
            && if descriptor.is_conforming() {
                descriptor.dpl() <= rpl
            } else {
                descriptor.dpl() == rpl
            };
        if !allowed {
            return Err(Exception::gp(error));
        }
        if !descriptor.present() {
            return Err(Exception::np(error));
        }
        Ok(descriptor)
    }

    /// Loads SS:rSP for a return to an outer privilege level (the CPL is already the new one).
    fn load_outer_stack(&mut self, ss_selector: u16, sp: u64) -> Result<(), Exception> {
        let long = self.mode() == CpuMode::Long;
        if long && ss_selector & 0xfffc == 0 && self.cpl != 3 {
            self.sregs.ss = Segment {
                selector: ss_selector,
                unusable: true,
                dpl: self.cpl,
                ..Segment::default()
            };
        } else {
            self.load_segment(SegReg::Ss, ss_selector)?;
        }
        let wide = self.sregs.ss.db || long;
        self.set_sp(sp, wide);
        Ok(())
    }

    /// After a return to an outer level, data segment registers the new CPL may not use are
    /// made null (SDM: RET and IRET "check segment registers").
    fn invalidate_data_segments(&mut self) {
        for seg in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let segment = *self.segment(seg);
            let conforming_code = segment.type_ & 0xc == 0xc;
            if !segment.unusable && !conforming_code && segment.dpl < self.cpl {
                *self.segment_mut(seg) = Segment {
                    unusable: true,
                    ..Segment::default()
                };
            }
        }
    }

    /// INT n, INT3, INTO, INT1: deliver through the IDT and return past the instruction.
    fn software_interrupt(&mut self, vector: u8, source: Source) -> Result<(), Exception> {
        self.deliver(vector, None, source, self.next_rip)?;
        self.next_rip = self.regs.rip;
        Ok(())
    }

    /// IRET, IRETD, IRETQ.
    fn iret(&mut self, i: &Instruction) -> Result<(), Exception> {
        let size = match i.mnemonic() {
            Mnemonic::Iret => 2,
            Mnemonic::Iretd => 4,
            _ => 8,
        };
        let (rip, _) = self.peek_stack(0, size)?;
        let (selector, _) = self.peek_stack(size as u64, size)?;
        let (flags, _) = self.peek_stack(2 * size as u64, size)?;
        let selector = selector as u16;
        let mask = size_mask(self.stack_width());
        let past = self.regs.gpr[4].wrapping_add(3 * size as u64) & mask;
        if self.mode() == CpuMode::Real || self.v86() {
            if self.v86() && self.iopl() < 3 {
                return Err(Exception::gp(0));
            }
            self.enter_code_segment(selector, rip, size)?;
            let keep = if self.v86() {
                RFLAGS_IOPL | RFLAGS_VM | RFLAGS_VIF | RFLAGS_VIP
            } else {
                RFLAGS_VM | RFLAGS_VIF | RFLAGS_VIP
            };
            let changeable = IRET_FLAGS & size_mask(size) & !keep;
            self.regs.rflags =
                (self.regs.rflags & !changeable) | (flags & changeable) | RFLAGS_FIXED;
            self.set_sp(past, self.stack_width() != 2);
            return Ok(());
        }
        if self.regs.rflags & RFLAGS_NT != 0 && self.mode() == CpuMode::Protected {
            // A return from a nested task needs a task switch, which is not implemented.
            return Err(Exception::gp(0));
        }
        if size == 4 && flags & RFLAGS_VM != 0 && self.cpl == 0 && self.mode() == CpuMode::Protected
        {
            return self.iret_to_v86(rip, selector, flags);
        }
        let rpl = (selector & 3) as u8;
        let descriptor = self.return_code_segment(selector)?;
        let long = self.mode() == CpuMode::Long;
        let to_64 = long && descriptor.to_segment(selector).l;
        let rip = if to_64 {
            rip
        } else {
            rip & size_mask(size) & 0xffff_ffff
        };
        let outer = rpl > self.cpl || self.mode() == CpuMode::Long && self.sregs.cs.l;
        let stack = if outer {
            let (sp, _) = self.peek_stack(3 * size as u64, size)?;
            let (ss, _) = self.peek_stack(4 * size as u64, size)?;
            Some((ss as u16, sp))
        } else {
            None
        };
        let old_cpl = self.cpl;
        let old_iopl = self.iopl();
        self.mark_descriptor_accessed(selector, descriptor)?;
        self.set_code_segment(selector, descriptor, rpl);
        let mut changeable = IRET_FLAGS & size_mask(size) & !(RFLAGS_VM | RFLAGS_VIF | RFLAGS_VIP);
        if old_cpl > 0 {
            changeable &= !RFLAGS_IOPL;
        }
        if old_cpl > old_iopl {
            changeable &= !RFLAGS_IF;
        }
        if size >= 4 && old_cpl == 0 {
            changeable |= RFLAGS_VIF | RFLAGS_VIP;
        }
        self.regs.rflags = (self.regs.rflags & !changeable) | (flags & changeable) | RFLAGS_FIXED;
        match stack {
            Some((ss, sp)) => {
                self.load_outer_stack(ss, sp)?;
                if rpl > old_cpl {
                    self.invalidate_data_segments();
                }
            }
            None => self.set_sp(past, self.stack_width() != 2),
        }
        self.next_rip = rip;
        Ok(())
    }

    /// IRETD from CPL 0 with VM set in the popped EFLAGS: back to virtual-8086 mode.
    fn iret_to_v86(&mut self, rip: u64, cs: u16, flags: u64) -> Result<(), Exception> {
        let mut slots = [0u64; 6];
        for (n, slot) in slots.iter_mut().enumerate() {
            *slot = self.peek_stack(12 + 4 * n as u64, 4)?.0;
        }
        let [esp, ss, es, ds, fs, gs] = slots;
        self.regs.rflags = (flags & IRET_FLAGS) | RFLAGS_FIXED;
        self.cpl = 3;
        let v86 = |selector: u64| Segment {
            selector: selector as u16,
            base: (selector & 0xffff) << 4,
            limit: 0xffff,
            type_: 0x3,
            s: true,
            dpl: 3,
            present: true,
            ..Segment::default()
        };
        self.sregs.cs = Segment {
            type_: 0xb,
            ..v86(cs.into())
        };
        self.sregs.ss = v86(ss);
        self.sregs.es = v86(es);
        self.sregs.ds = v86(ds);
        self.sregs.fs = v86(fs);
        self.sregs.gs = v86(gs);
        self.regs.gpr[4] = esp & 0xffff_ffff;
        self.next_rip = rip & 0xffff;
        Ok(())
    }

    /// The flat segments SYSCALL, SYSRET, SYSENTER and SYSEXIT load, from their selectors.
    fn flat_code(selector: u16, dpl: u8, long: bool) -> Segment {
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            type_: 0xb,
            s: true,
            dpl,
            present: true,
            l: long,
            db: !long,
            g: true,
            ..Segment::default()
        }
    }

    /// The flat stack segment of a fast system call.
    fn flat_stack(selector: u16, dpl: u8) -> Segment {
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            type_: 0x3,
            s: true,
            dpl,
            present: true,
            db: true,
            g: true,
            ..Segment::default()
        }
    }

    /// SYSCALL (IA-32e mode, EFER.SCE).
    fn syscall(&mut self) -> Result<(), Exception> {
        const EFER_SCE: u64 = 1;
        if self.mode() != CpuMode::Long || self.sregs.efer & EFER_SCE == 0 {
            return Err(Exception::ud());
        }
        let selector = (self.msr.star >> 32) as u16;
        self.regs.gpr[1] = self.next_rip;
        self.regs.gpr[11] = self.regs.rflags & !RFLAGS_RF;
        self.sregs.cs = Self::flat_code(selector & 0xfffc, 0, true);
        self.sregs.ss = Self::flat_stack((selector + 8) & 0xfffc, 0);
        self.cpl = 0;
        self.regs.rflags &= !(self.msr.sfmask | RFLAGS_RF);
        self.regs.rflags |= RFLAGS_FIXED;
        self.next_rip = self.msr.lstar;
        Ok(())
    }

    /// SYSRET: back to CPL 3 in 64-bit (REX.W) or compatibility mode.
    fn sysret(&mut self, i: &Instruction) -> Result<(), Exception> {
        const EFER_SCE: u64 = 1;
        if self.mode() != CpuMode::Long || self.sregs.efer & EFER_SCE == 0 {
            return Err(Exception::ud());
        }
        if self.cpl != 0 {
            return Err(Exception::gp(0));
        }
        let to_64 = i.mnemonic() == Mnemonic::Sysretq;
        let rip = if to_64 {
            self.regs.gpr[1]
        } else {
            self.regs.gpr[1] & 0xffff_ffff
        };
        if !self.canonical(rip) {
            return Err(Exception::gp(0));
        }
        let base = (self.msr.star >> 48) as u16;
        let cs = if to_64 { base + 16 } else { base };
        self.sregs.cs = Self::flat_code(cs | 3, 3, to_64);
        self.sregs.ss.selector = (base + 8) | 3;
        self.sregs.ss.dpl = 3;
        self.cpl = 3;
        self.regs.rflags = (self.regs.gpr[11] & 0x3c_7fd7) | RFLAGS_FIXED;
        self.next_rip = rip;
        Ok(())
    }

    /// SYSENTER: to CPL 0 at SYSENTER_CS/EIP/ESP.
    fn sysenter(&mut self) -> Result<(), Exception> {
        if self.mode() == CpuMode::Real || self.msr.sysenter_cs & 0xfffc == 0 {
            return Err(Exception::gp(0));
        }
        let long = self.sregs.efer & (1 << 10) != 0;
        let cs = self.msr.sysenter_cs as u16 & 0xfffc;
        self.regs.rflags &= !(RFLAGS_VM | RFLAGS_IF | RFLAGS_RF);
        self.sregs.cs = Self::flat_code(cs, 0, long);
        self.sregs.ss = Self::flat_stack(cs + 8, 0);
        self.cpl = 0;
        let mask = if long { u64::MAX } else { 0xffff_ffff };
        self.regs.gpr[4] = self.msr.sysenter_esp & mask;
        self.next_rip = self.msr.sysenter_eip & mask;
        Ok(())
    }

    /// SYSEXIT: to CPL 3 at rDX with stack rCX.
    fn sysexit(&mut self, i: &Instruction) -> Result<(), Exception> {
        if self.mode() == CpuMode::Real || self.v86() || self.msr.sysenter_cs & 0xfffc == 0 {
            return Err(Exception::gp(0));
        }
        if self.cpl != 0 {
            return Err(Exception::gp(0));
        }
        let to_64 = i.mnemonic() == Mnemonic::Sysexitq;
        let base = self.msr.sysenter_cs as u16;
        let (cs, ss) = if to_64 {
            (base + 32, base + 40)
        } else {
            (base + 16, base + 24)
        };
        self.sregs.cs = Self::flat_code(cs | 3, 3, to_64);
        self.sregs.ss = Self::flat_stack(ss | 3, 3);
        self.cpl = 3;
        let mask = if to_64 { u64::MAX } else { 0xffff_ffff };
        self.regs.gpr[4] = self.regs.gpr[1] & mask;
        self.next_rip = self.regs.gpr[2] & mask;
        Ok(())
    }
}
