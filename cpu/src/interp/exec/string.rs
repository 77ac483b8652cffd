//! The string instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) and their REP prefixes.
//!
//! A REP-prefixed instruction runs up to [`ITERATIONS_PER_STEP`] iterations per step, committing
//! rCX, rSI and rDI after each; if it has not finished it leaves RIP on itself, so the vCPU loop
//! can take an interrupt and the instruction continues where it stopped, as the SDM allows.
//! With TF set it runs one iteration per step: the processor takes the single-step trap after
//! each iteration, with RIP still on the instruction. A fault in an iteration leaves the
//! registers as the completed iterations left them, except that a REPE or REPNE CMPS or SCAS
//! puts RFLAGS back as it was before the instruction (SDM Vol. 2B, REP), so that it resumes
//! as if it had not begun.
//!
//! REP MOVS and REP STOS in 64-bit mode copy or fill RAM a page run at a time
//! ([`Interpreter::bulk_string`]) where nothing needs to see each element: forward, no
//! single-stepping, watchpoints or alignment checks, source and destination not overlapping
//! within the run, both in RAM that the TLB lets them reach directly. Each run is what the
//! elements would have done one by one, and a run stops at a page boundary, so a fault is
//! taken by the element-by-element path with the registers as the SDM leaves them.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::interp::alu::{self, BinaryOp, OpSize, ZF};
use crate::interp::exception::Exception;
use crate::interp::operands::size_mask;
use crate::interp::segmentation::SegReg;
use crate::interp::{Interpreter, StepEvent};
use crate::state::{CpuMode, RFLAGS_AC, RFLAGS_DF, RFLAGS_TF};
use umbra_mmu::walker::AccessKind;

/// How many iterations a REP string instruction runs before giving the loop a chance to
/// deliver interrupts.
const ITERATIONS_PER_STEP: u32 = 4096;

/// Which string instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StringOp {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
    Ins,
    Outs,
}

/// The address size of a string instruction, from its implicit memory operands.
fn string_address_size(i: &Instruction) -> usize {
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemoryESDI => return 2,
            OpKind::MemorySegESI | OpKind::MemoryESEDI => return 4,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => return 8,
            _ => {}
        }
    }
    8
}

/// The string operation `i` is, telling the string forms of MOVSD and CMPSD from the SSE2 ones.
fn string_op(i: &Instruction) -> Option<StringOp> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Movsb | Movsw | Movsq => StringOp::Movs,
        Movsd if i.code() == Code::Movsd_m32_m32 => StringOp::Movs,
        Stosb | Stosw | Stosd | Stosq => StringOp::Stos,
        Lodsb | Lodsw | Lodsd | Lodsq => StringOp::Lods,
        Cmpsb | Cmpsw | Cmpsq => StringOp::Cmps,
        Cmpsd if i.code() == Code::Cmpsd_m32_m32 => StringOp::Cmps,
        Scasb | Scasw | Scasd | Scasq => StringOp::Scas,
        Insb | Insw | Insd => StringOp::Ins,
        Outsb | Outsw | Outsd => StringOp::Outs,
        _ => return None,
    })
}

/// The element size of a string instruction, in bytes.
fn element_size(i: &Instruction) -> usize {
    use Mnemonic::*;
    match i.mnemonic() {
        Movsb | Stosb | Lodsb | Cmpsb | Scasb | Insb | Outsb => 1,
        Movsw | Stosw | Lodsw | Cmpsw | Scasw | Insw | Outsw => 2,
        Movsd | Stosd | Lodsd | Cmpsd | Scasd | Insd | Outsd => 4,
        _ => 8,
    }
}

impl Interpreter {
    /// Runs `instruction` if it is a string instruction.
    pub(super) fn execute_string(
        &mut self,
        instruction: &Instruction,
    ) -> Result<Option<()>, Exception> {
        let Some(op) = string_op(instruction) else {
            return Ok(None);
        };
        let size = element_size(instruction);
        let address_size = string_address_size(instruction);
        let (si, di, cx) = match address_size {
            2 => (Register::SI, Register::DI, Register::CX),
            4 => (Register::ESI, Register::EDI, Register::ECX),
            _ => (Register::RSI, Register::RDI, Register::RCX),
        };
        let source_seg = Self::memory_segment(instruction);
        let repeated = instruction.has_rep_prefix() || instruction.has_repne_prefix();
        let step = if self.regs.rflags & RFLAGS_DF != 0 {
            (size as u64).wrapping_neg()
        } else {
            size as u64
        };
        let mask = size_mask(address_size);
        let port = self.reg(Register::DX) as u16;
        if matches!(op, StringOp::Ins | StringOp::Outs) {
            self.check_io_permission(port, size)?;
        }
        let acc = match size {
            1 => Register::AL,
            2 => Register::AX,
            4 => Register::EAX,
            _ => Register::RAX,
        };
        let rflags_before = self.regs.rflags;
        let bulk = repeated
            && matches!(op, StringOp::Movs | StringOp::Stos)
            && address_size == 8
            && self.mode() == CpuMode::Long
            && self.regs.rflags & (RFLAGS_DF | RFLAGS_TF | RFLAGS_AC) == 0
            && !self.watching();
        let mut iterations = 0;
        loop {
            if repeated && self.reg(cx) == 0 {
                return Ok(Some(()));
            }
            if bulk {
                let limit = (ITERATIONS_PER_STEP - iterations).min(self.reg(cx) as u32);
                let done = self.bulk_string(op, source_seg, size, acc, limit);
                if done > 0 {
                    let bytes = done as u64 * size as u64;
                    if op == StringOp::Movs {
                        self.set_reg(si, self.reg(si).wrapping_add(bytes));
                    }
                    self.set_reg(di, self.reg(di).wrapping_add(bytes));
                    let remaining = self.reg(cx) - u64::from(done);
                    self.set_reg(cx, remaining);
                    iterations += done;
                    if remaining == 0 {
                        return Ok(Some(()));
                    }
                    if iterations >= ITERATIONS_PER_STEP {
                        self.next_rip = self.regs.rip;
                        return Ok(Some(()));
                    }
                    continue;
                }
            }
            let source = self.reg(si);
            let destination = self.reg(di);
            let mut compare_equal = None;
            match op {
                StringOp::Movs => {
                    let value = self.read_mem(source_seg, source, size)?;
                    self.write_mem(SegReg::Es, destination, size, value)?;
                }
                StringOp::Stos => {
                    let value = self.reg(acc);
                    self.write_mem(SegReg::Es, destination, size, value)?;
                }
                StringOp::Lods => {
                    let value = self.read_mem(source_seg, source, size)?;
                    self.set_reg(acc, value);
                }
                StringOp::Cmps | StringOp::Scas => {
                    let operands = if op == StringOp::Cmps {
                        self.read_mem(source_seg, source, size)
                            .and_then(|a| Ok((a, self.read_mem(SegReg::Es, destination, size)?)))
                    } else {
                        self.read_mem(SegReg::Es, destination, size)
                            .map(|b| (self.reg(acc), b))
                    };
                    let (a, b) = operands.inspect_err(|_| self.regs.rflags = rflags_before)?;
                    let width = OpSize::from_bytes(size as u32).expect("1, 2, 4 or 8");
                    let (_, flags) = alu::binary(BinaryOp::Cmp, width, a, b, self.regs.rflags);
                    self.regs.rflags =
                        (self.regs.rflags & !alu::ARITH_FLAGS) | (flags & alu::ARITH_FLAGS);
                    compare_equal = Some(flags & ZF != 0);
                }
                StringOp::Ins => {
                    // The destination is checked before the port is read, so a fault does not
                    // lose the byte.
                    let location = self.resolve(SegReg::Es, destination, size, true)?;
                    let mut data = [0u8; 4];
                    self.io.pio_read(port, &mut data[..size]);
                    self.write_location(&location, &data[..size]);
                    self.event = StepEvent::Io;
                }
                StringOp::Outs => {
                    let value = self.read_mem(source_seg, source, size)?;
                    self.io.pio_write(port, &value.to_le_bytes()[..size]);
                    self.event = StepEvent::Io;
                }
            }
            if matches!(
                op,
                StringOp::Movs | StringOp::Lods | StringOp::Cmps | StringOp::Outs
            ) {
                self.set_reg(si, source.wrapping_add(step) & mask);
            }
            if matches!(
                op,
                StringOp::Movs | StringOp::Stos | StringOp::Cmps | StringOp::Scas | StringOp::Ins
            ) {
                self.set_reg(di, destination.wrapping_add(step) & mask);
            }
            if !repeated {
                return Ok(Some(()));
            }
            let remaining = self.reg(cx).wrapping_sub(1) & mask;
            self.set_reg(cx, remaining);
            if let Some(equal) = compare_equal {
                let stop = if instruction.has_repne_prefix() {
                    equal
                } else {
                    !equal
                };
                if stop {
                    return Ok(Some(()));
                }
            }
            if remaining == 0 {
                return Ok(Some(()));
            }
            iterations += 1;
            if iterations == ITERATIONS_PER_STEP
                || self.event == StepEvent::Io
                || self.regs.rflags & RFLAGS_TF != 0
            {
                // Not finished: run this instruction again on the next step.
                self.next_rip = self.regs.rip;
                return Ok(Some(()));
            }
        }
    }
}

impl Interpreter {
    /// Runs up to `limit` iterations of a forward REP MOVS or REP STOS of `size`-byte
    /// elements (rSI, rDI and rCX as the instruction left them) as one copy or fill, within
    /// one page of source and of destination: how many it ran, 0 where it cannot (the
    /// caller then runs the next element alone).
    fn bulk_string(
        &mut self,
        op: StringOp,
        source_seg: SegReg,
        size: usize,
        acc: Register,
        limit: u32,
    ) -> u32 {
        let to_page_end = |linear: u64| 0x1000 - (linear & 0xfff) as usize;
        let Ok(destination) = self.linear(SegReg::Es, self.reg(Register::RDI), 1, true) else {
            return 0;
        };
        let mut bytes = to_page_end(destination).min(limit as usize * size);
        let source = if op == StringOp::Movs {
            let Ok(source) = self.linear(source_seg, self.reg(Register::RSI), 1, false) else {
                return 0;
            };
            bytes = bytes.min(to_page_end(source));
            // Forward element-by-element copying into a destination ahead of the source
            // repeats the source's first elements: not a plain copy.
            let overlaps = destination > source && destination - source < bytes as u64;
            if overlaps {
                return 0;
            }
            Some(source)
        } else {
            None
        };
        let elements = bytes / size;
        if elements == 0 || !self.canonical(destination) {
            return 0;
        }
        let bytes = elements * size;
        // The source first, as the elements would touch it: a fault on either leaves the
        // accessed and dirty bits as the element-by-element path will.
        let from = match source {
            Some(source) => {
                let read = self.access(AccessKind::Read);
                if !self.canonical(source) {
                    return 0;
                }
                let Some(from) = self.translate(source, read).ok().and_then(|m| m.host) else {
                    return 0;
                };
                Some(from)
            }
            None => None,
        };
        let write = self.access(AccessKind::Write);
        let Some(to) = self.translate(destination, write).ok().and_then(|m| m.host) else {
            return 0;
        };
        let mut buffer = [0u8; 0x1000];
        let data = &mut buffer[..bytes];
        match from {
            // SAFETY: both mappings were translated in this instruction and the run stays
            // within each page.
            Some(from) => unsafe { self.mmu.read_host(from, data) },
            None => {
                let value = self.reg(acc).to_le_bytes();
                for element in data.chunks_exact_mut(size) {
                    element.copy_from_slice(&value[..size]);
                }
            }
        }
        // SAFETY: as above, for the destination translated for a write.
        unsafe { self.mmu.write_host(to, data) };
        elements as u32
    }
}

#[cfg(test)]
mod tests;
