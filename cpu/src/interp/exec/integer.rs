//! Integer instructions: data movement, arithmetic and logic, shifts, multiply and divide,
//! bit operations, flag instructions, and the stack.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::op_size;
use crate::interp::Interpreter;
use crate::interp::alu::{self, ARITH_FLAGS, BinaryOp, BitTestOp, CF, OpSize, ShiftOp, UnaryOp};
use crate::interp::exception::Exception;
use crate::interp::operands::size_mask;
use crate::interp::segmentation::SegReg;
use crate::state::{
    CpuMode, RFLAGS_AC, RFLAGS_DF, RFLAGS_FIXED, RFLAGS_ID, RFLAGS_IF, RFLAGS_IOPL, RFLAGS_NT,
    RFLAGS_RF, RFLAGS_TF, RFLAGS_VIF, RFLAGS_VIP, RFLAGS_VM,
};

/// The register of size `bytes` that holds the accumulator (AL, AX, EAX, RAX).
fn accumulator(bytes: usize) -> Register {
    match bytes {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// The register of size `bytes` that extends the accumulator (AH for bytes, else DX/EDX/RDX).
fn data_register(bytes: usize) -> Register {
    match bytes {
        1 => Register::AH,
        2 => Register::DX,
        4 => Register::EDX,
        _ => Register::RDX,
    }
}

/// MOV to or from a control or debug register, which the system family runs.
fn is_control_register_move(i: &Instruction) -> bool {
    let special = |r: Register| r.is_cr() || r.is_dr();
    (i.op0_kind() == OpKind::Register && special(i.op0_register()))
        || (i.op1_kind() == OpKind::Register && special(i.op1_register()))
}

/// Sign-extends the low `bytes` bytes of `value`.
fn sign_extend(value: u64, bytes: usize) -> u64 {
    let shift = 64 - 8 * bytes as u32;
    (((value << shift) as i64) >> shift) as u64
}

impl Interpreter {
    /// Sets the arithmetic flags from an [`alu`] result.
    fn set_arith_flags(&mut self, rflags: u64) {
        self.regs.rflags = (self.regs.rflags & !ARITH_FLAGS) | (rflags & ARITH_FLAGS);
    }

    /// Runs `instruction` if it is an integer instruction.
    pub(super) fn execute_integer(
        &mut self,
        instruction: &Instruction,
    ) -> Result<Option<()>, Exception> {
        use Mnemonic::*;
        let i = instruction;
        match i.mnemonic() {
            Mov if !is_control_register_move(i) => self.mov(i)?,
            Movzx => {
                let value = self.read_operand(i, 1)?;
                self.write_operand(i, 0, value)?;
            }
            Movsx | Movsxd => {
                let value = self.read_operand(i, 1)?;
                let extended = sign_extend(value, Self::operand_size(i, 1));
                self.write_operand(i, 0, extended & size_mask(Self::operand_size(i, 0)))?;
            }
            Lea => {
                let offset = self.effective_offset(i);
                self.write_operand(i, 0, offset & size_mask(Self::operand_size(i, 0)))?;
            }
            Add | Or | Adc | Sbb | And | Sub | Xor => self.binary(i)?,
            Cmp | Test => {
                let op = if i.mnemonic() == Cmp {
                    BinaryOp::Cmp
                } else {
                    BinaryOp::Test
                };
                let a = self.read_operand(i, 0)?;
                let b = self.read_operand(i, 1)?;
                let (_, flags) = alu::binary(op, op_size(i, 0), a, b, self.regs.rflags);
                self.set_arith_flags(flags);
            }
            Inc | Dec | Neg | Not => {
                let op = match i.mnemonic() {
                    Inc => UnaryOp::Inc,
                    Dec => UnaryOp::Dec,
                    Neg => UnaryOp::Neg,
                    _ => UnaryOp::Not,
                };
                let place = self.place(i, 0)?;
                let a = self.load(&place);
                let (result, flags) = alu::unary(op, op_size(i, 0), a, self.regs.rflags);
                self.store(&place, result);
                self.set_arith_flags(flags);
            }
            Rol | Ror | Rcl | Rcr | Shl | Sal | Shr | Sar => self.shift(i)?,
            Shld | Shrd => {
                let place = self.place(i, 0)?;
                let src = self.read_operand(i, 1)?;
                let count = self.read_operand(i, 2)? as u8;
                let dst = self.load(&place);
                let size = op_size(i, 0);
                let (result, flags) = if i.mnemonic() == Shld {
                    alu::shld(size, dst, src, count, self.regs.rflags)
                } else {
                    alu::shrd(size, dst, src, count, self.regs.rflags)
                };
                self.store(&place, result);
                self.set_arith_flags(flags);
            }
            Mul | Imul if i.op_count() == 1 => self.multiply_wide(i)?,
            Imul => {
                let (a, b) = if i.op_count() == 2 {
                    (self.read_operand(i, 0)?, self.read_operand(i, 1)?)
                } else {
                    (self.read_operand(i, 1)?, self.read_operand(i, 2)?)
                };
                let (result, flags) = alu::imul(op_size(i, 0), a, b, self.regs.rflags);
                self.write_operand(i, 0, result)?;
                self.set_arith_flags(flags);
            }
            Div | Idiv => self.divide(i)?,
            Bt | Bts | Btr | Btc => self.bit_test(i)?,
            Bsf | Bsr => {
                // With a zero source the destination keeps its old value, all 64 bits of it
                // (a 32-bit BSF does not clear the upper half then): the whole register goes
                // in and comes out.
                let src = self.read_operand(i, 1)?;
                let destination = i.op0_register().full_register();
                let old = self.reg(destination);
                let size = op_size(i, 0);
                let (result, flags) = if i.mnemonic() == Bsf {
                    alu::bsf(size, src, old, self.regs.rflags)
                } else {
                    alu::bsr(size, src, old, self.regs.rflags)
                };
                self.set_reg(destination, result);
                self.set_arith_flags(flags);
            }
            Tzcnt | Lzcnt | Popcnt => {
                let src = self.read_operand(i, 1)?;
                let size = op_size(i, 0);
                let (result, flags) = match i.mnemonic() {
                    Tzcnt => alu::tzcnt(size, src, self.regs.rflags),
                    Lzcnt => alu::lzcnt(size, src, self.regs.rflags),
                    _ => alu::popcnt(size, src, self.regs.rflags),
                };
                self.write_operand(i, 0, result)?;
                self.set_arith_flags(flags);
            }
            Bswap => {
                let value = self.read_operand(i, 0)?;
                self.write_operand(i, 0, alu::bswap(op_size(i, 0), value))?;
            }
            Movbe => {
                let value = self.read_operand(i, 1)?;
                self.write_operand(i, 0, alu::movbe(op_size(i, 0), value))?;
            }
            Xchg => {
                let place = self.place(i, 0)?;
                let other = i.op1_register();
                let a = self.load(&place);
                let b = self.reg(other);
                self.store(&place, b);
                self.set_reg(other, a);
            }
            Xadd => {
                let place = self.place(i, 0)?;
                let src = i.op1_register();
                let a = self.load(&place);
                let b = self.reg(src);
                let (sum, flags) =
                    alu::binary(BinaryOp::Add, op_size(i, 0), a, b, self.regs.rflags);
                self.set_reg(src, a);
                self.store(&place, sum);
                self.set_arith_flags(flags);
            }
            Cmpxchg => {
                let place = self.place(i, 0)?;
                let size = op_size(i, 0);
                let acc = accumulator(size.bytes() as usize);
                let current = self.load(&place);
                let expected = self.reg(acc);
                let (_, flags) =
                    alu::binary(BinaryOp::Cmp, size, expected, current, self.regs.rflags);
                if current == expected {
                    let new = self.reg(i.op1_register());
                    self.store(&place, new);
                } else {
                    // The destination is written back unchanged, as the processor does.
                    self.store(&place, current);
                    self.set_reg(acc, current);
                }
                self.set_arith_flags(flags);
            }
            Cmpxchg8b | Cmpxchg16b => self.cmpxchg_double(i)?,
            Cbw | Cwde | Cdqe => {
                // No explicit operands: the size is in the mnemonic, as for CWD below.
                let bytes = match i.mnemonic() {
                    Cbw => 2,
                    Cwde => 4,
                    _ => 8,
                };
                let half = bytes / 2;
                let value = sign_extend(self.reg(accumulator(half)), half);
                self.set_reg(accumulator(bytes), value);
            }
            Cwd | Cdq | Cqo => {
                let bytes = match i.mnemonic() {
                    Cwd => 2,
                    Cdq => 4,
                    _ => 8,
                };
                let negative = sign_extend(self.reg(accumulator(bytes)), bytes) >> 63 != 0;
                self.set_reg(data_register(bytes), if negative { u64::MAX } else { 0 });
            }
            Push => self.push_instruction(i)?,
            Pop => self.pop_instruction(i)?,
            Pusha | Pushad => self.push_all(i)?,
            Popa | Popad => self.pop_all(i)?,
            Pushf | Pushfd | Pushfq => self.push_flags(i)?,
            Popf | Popfd | Popfq => self.pop_flags(i)?,
            Enter => self.enter(i)?,
            Leave => {
                let width = self.stack_width();
                let frame = self.reg(match width {
                    2 => Register::BP,
                    4 => Register::EBP,
                    _ => Register::RBP,
                });
                let size = match i.code() {
                    iced_x86::Code::Leavew => 2,
                    iced_x86::Code::Leaved => 4,
                    _ => 8,
                };
                let mask = size_mask(width);
                let sp = frame & mask;
                let value = self.read_mem(SegReg::Ss, sp, size)?;
                self.set_sp(sp.wrapping_add(size as u64) & mask, width != 2);
                let bp = match size {
                    2 => Register::BP,
                    4 => Register::EBP,
                    _ => Register::RBP,
                };
                self.set_reg(bp, value);
            }
            Lahf => {
                let ah = (self.regs.rflags & 0xd5) | RFLAGS_FIXED;
                self.set_reg(Register::AH, ah);
            }
            Sahf => {
                let ah = self.reg(Register::AH) & 0xd5;
                self.regs.rflags = (self.regs.rflags & !0xd5) | ah | RFLAGS_FIXED;
            }
            Clc => self.regs.rflags &= !CF,
            Stc => self.regs.rflags |= CF,
            Cmc => self.regs.rflags ^= CF,
            Cld => self.regs.rflags &= !RFLAGS_DF,
            Std => self.regs.rflags |= RFLAGS_DF,
            Xlatb => {
                let bx = match self.address_size(i) {
                    2 => Register::BX,
                    4 => Register::EBX,
                    _ => Register::RBX,
                };
                let offset = self.reg(bx).wrapping_add(self.reg(Register::AL))
                    & size_mask(self.address_size(i));
                let value = self.read_mem(Self::memory_segment(i), offset, 1)?;
                self.set_reg(Register::AL, value);
            }
            Nop | Endbr32 | Endbr64 | Prefetchnta | Prefetcht0 | Prefetcht1 | Prefetcht2
            | Prefetchw => {}
            Daa | Das => {
                let al = self.reg(Register::AL) as u8;
                let (result, flags) = if i.mnemonic() == Daa {
                    alu::daa(al, self.regs.rflags)
                } else {
                    alu::das(al, self.regs.rflags)
                };
                self.set_reg(Register::AL, result.into());
                self.set_arith_flags(flags);
            }
            Aaa | Aas => {
                let ax = self.reg(Register::AX) as u16;
                let (result, flags) = if i.mnemonic() == Aaa {
                    alu::aaa(ax, self.regs.rflags)
                } else {
                    alu::aas(ax, self.regs.rflags)
                };
                self.set_reg(Register::AX, result.into());
                self.set_arith_flags(flags);
            }
            Aam => {
                let al = self.reg(Register::AL) as u8;
                let (ax, flags) =
                    alu::aam(al, i.immediate8(), self.regs.rflags).map_err(|_| Exception::de())?;
                self.set_reg(Register::AX, ax.into());
                self.set_arith_flags(flags);
            }
            Aad => {
                let ax = self.reg(Register::AX) as u16;
                let (result, flags) = alu::aad(ax, i.immediate8(), self.regs.rflags);
                self.set_reg(Register::AX, result.into());
                self.set_arith_flags(flags);
            }
            Lds | Les | Lfs | Lgs | Lss => {
                let size = Self::operand_size(i, 0);
                let offset = self.effective_offset(i);
                let seg = Self::memory_segment(i);
                let pointer = self.read_mem(seg, offset, size)?;
                let selector = self.read_mem(seg, offset.wrapping_add(size as u64), 2)? as u16;
                let target = match i.mnemonic() {
                    Lds => SegReg::Ds,
                    Les => SegReg::Es,
                    Lfs => SegReg::Fs,
                    Lgs => SegReg::Gs,
                    _ => SegReg::Ss,
                };
                self.load_segment(target, selector)?;
                if target == SegReg::Ss {
                    self.interrupt_shadow = true;
                }
                self.write_operand(i, 0, pointer)?;
            }
            _ => return Ok(None),
        }
        Ok(Some(()))
    }

    /// MOV in all its forms, including to and from segment registers.
    fn mov(&mut self, i: &Instruction) -> Result<(), Exception> {
        if i.op0_kind() == OpKind::Register
            && let Some(seg) = SegReg::from_register(i.op0_register())
        {
            if seg == SegReg::Cs {
                return Err(Exception::ud());
            }
            let selector = self.read_operand(i, 1)? as u16;
            self.load_segment(seg, selector)?;
            if seg == SegReg::Ss {
                self.interrupt_shadow = true;
            }
            return Ok(());
        }
        let mut value = self.read_operand(i, 1)?;
        // A segment register stored to a wider register is zero-extended; to memory, it is
        // always 16 bits (iced-x86 gives the memory operand that size).
        if i.op1_kind() == OpKind::Register && SegReg::from_register(i.op1_register()).is_some() {
            value &= 0xffff;
        }
        self.write_operand(i, 0, value)
    }

    /// ADD, OR, ADC, SBB, AND, SUB, XOR: read-modify-write of operand 0.
    fn binary(&mut self, i: &Instruction) -> Result<(), Exception> {
        let op = match i.mnemonic() {
            Mnemonic::Add => BinaryOp::Add,
            Mnemonic::Or => BinaryOp::Or,
            Mnemonic::Adc => BinaryOp::Adc,
            Mnemonic::Sbb => BinaryOp::Sbb,
            Mnemonic::And => BinaryOp::And,
            Mnemonic::Sub => BinaryOp::Sub,
            _ => BinaryOp::Xor,
        };
        let place = self.place(i, 0)?;
        let b = self.read_operand(i, 1)?;
        let a = self.load(&place);
        let (result, flags) = alu::binary(op, op_size(i, 0), a, b, self.regs.rflags);
        self.store(&place, result);
        self.set_arith_flags(flags);
        Ok(())
    }

    /// The shifts and rotates; the count is 1, an immediate, or CL.
    fn shift(&mut self, i: &Instruction) -> Result<(), Exception> {
        let op = match i.mnemonic() {
            Mnemonic::Rol => ShiftOp::Rol,
            Mnemonic::Ror => ShiftOp::Ror,
            Mnemonic::Rcl => ShiftOp::Rcl,
            Mnemonic::Rcr => ShiftOp::Rcr,
            Mnemonic::Shl | Mnemonic::Sal => ShiftOp::Shl,
            Mnemonic::Shr => ShiftOp::Shr,
            _ => ShiftOp::Sar,
        };
        let count = if i.op_count() == 2 {
            self.read_operand(i, 1)? as u8
        } else {
            1
        };
        let place = self.place(i, 0)?;
        let a = self.load(&place);
        let (result, flags) = alu::shift(op, op_size(i, 0), a, count, self.regs.rflags);
        self.store(&place, result);
        self.set_arith_flags(flags);
        Ok(())
    }

    /// One-operand MUL and IMUL: rDX:rAX (or AX) = rAX * operand.
    fn multiply_wide(&mut self, i: &Instruction) -> Result<(), Exception> {
        let size = op_size(i, 0);
        let bytes = size.bytes() as usize;
        let b = self.read_operand(i, 0)?;
        let a = self.reg(accumulator(bytes));
        let (wide, flags) = if i.mnemonic() == Mnemonic::Mul {
            alu::mul(size, a, b, self.regs.rflags)
        } else {
            alu::imul_wide(size, a, b, self.regs.rflags)
        };
        if size == OpSize::Byte {
            self.set_reg(Register::AX, wide.lo);
        } else {
            self.set_reg(accumulator(bytes), wide.lo);
            self.set_reg(data_register(bytes), wide.hi);
        }
        self.set_arith_flags(flags);
        Ok(())
    }

    /// DIV and IDIV: rAX = rDX:rAX / operand, rDX = remainder (AL and AH for bytes).
    fn divide(&mut self, i: &Instruction) -> Result<(), Exception> {
        let size = op_size(i, 0);
        let bytes = size.bytes() as usize;
        let divisor = self.read_operand(i, 0)?;
        let (hi, lo) = if size == OpSize::Byte {
            (0, self.reg(Register::AX))
        } else {
            (self.reg(data_register(bytes)), self.reg(accumulator(bytes)))
        };
        let result = if i.mnemonic() == Mnemonic::Div {
            alu::div(size, hi, lo, divisor, self.regs.rflags)
        } else {
            alu::idiv(size, hi, lo, divisor, self.regs.rflags)
        };
        let (quotient, remainder, flags) = result.map_err(|_| Exception::de())?;
        if size == OpSize::Byte {
            self.set_reg(Register::AL, quotient);
            self.set_reg(Register::AH, remainder);
        } else {
            self.set_reg(accumulator(bytes), quotient);
            self.set_reg(data_register(bytes), remainder);
        }
        self.set_arith_flags(flags);
        Ok(())
    }

    /// BT, BTS, BTR, BTC. With a register bit offset and a memory operand, the offset selects
    /// any bit of a bit string around the operand (SDM: the offset is signed).
    fn bit_test(&mut self, i: &Instruction) -> Result<(), Exception> {
        let op = match i.mnemonic() {
            Mnemonic::Bt => BitTestOp::Bt,
            Mnemonic::Bts => BitTestOp::Bts,
            Mnemonic::Btr => BitTestOp::Btr,
            _ => BitTestOp::Btc,
        };
        let size = op_size(i, 0);
        let bits = u64::from(size.bits());
        let raw = self.read_operand(i, 1)?;
        let place = if i.op0_kind() == OpKind::Memory && i.op1_kind() == OpKind::Register {
            let offset = sign_extend(raw, Self::operand_size(i, 1)) as i64;
            let displacement = offset.div_euclid(bits as i64) * (bits as i64 / 8);
            let address = self.effective_offset(i).wrapping_add(displacement as u64)
                & size_mask(self.address_size(i));
            let write = op != BitTestOp::Bt;
            let location = self.resolve(
                Self::memory_segment(i),
                address,
                size.bytes() as usize,
                write,
            )?;
            crate::interp::operands::Place::Memory(location)
        } else if op == BitTestOp::Bt && i.op0_kind() == OpKind::Memory {
            let offset = self.effective_offset(i);
            let location = self.resolve(
                Self::memory_segment(i),
                offset,
                size.bytes() as usize,
                false,
            )?;
            crate::interp::operands::Place::Memory(location)
        } else {
            self.place(i, 0)?
        };
        let value = self.load(&place);
        let (result, flags) = alu::bit_test(op, size, value, raw % bits, self.regs.rflags);
        if op != BitTestOp::Bt {
            self.store(&place, result);
        }
        self.set_arith_flags(flags);
        Ok(())
    }

    /// CMPXCHG8B and CMPXCHG16B: compare rDX:rAX with the operand, store rCX:rBX if equal.
    fn cmpxchg_double(&mut self, i: &Instruction) -> Result<(), Exception> {
        let half = if i.mnemonic() == Mnemonic::Cmpxchg8b {
            4
        } else {
            8
        };
        let offset = self.effective_offset(i);
        if half == 8 && !offset.is_multiple_of(16) {
            return Err(Exception::gp(0));
        }
        let seg = Self::memory_segment(i);
        let location = self.resolve(seg, offset, 2 * half, true)?;
        let mut bytes = [0u8; 16];
        self.read_location(&location, &mut bytes[..2 * half]);
        let mask = size_mask(half);
        let lo = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) & mask;
        let hi = if half == 8 {
            u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"))
        } else {
            u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) >> 32
        };
        let (rax, rdx, rbx, rcx) = (
            self.gpr(0) & mask,
            self.gpr(2) & mask,
            self.gpr(3) & mask,
            self.gpr(1) & mask,
        );
        if lo == rax && hi == rdx {
            let mut new = [0u8; 16];
            new[..half].copy_from_slice(&rbx.to_le_bytes()[..half]);
            new[half..2 * half].copy_from_slice(&rcx.to_le_bytes()[..half]);
            self.write_location(&location, &new[..2 * half]);
            self.regs.rflags |= alu::ZF;
        } else {
            self.write_location(&location, &bytes[..2 * half]);
            let (acc, data) = if half == 8 {
                (Register::RAX, Register::RDX)
            } else {
                (Register::EAX, Register::EDX)
            };
            self.set_reg(acc, lo);
            self.set_reg(data, hi);
            self.regs.rflags &= !alu::ZF;
        }
        Ok(())
    }

    /// PUSH of a register, segment register, immediate or memory operand.
    fn push_instruction(&mut self, i: &Instruction) -> Result<(), Exception> {
        let size = i.stack_pointer_increment().unsigned_abs() as usize;
        let value = if i.op0_kind() == OpKind::Register
            && SegReg::from_register(i.op0_register()).is_some()
        {
            // A segment register pushed with a 32- or 64-bit operand size writes only 16 bits
            // on current processors; the rest of the slot keeps what was there.
            let selector = self.reg(i.op0_register());
            let width = self.stack_width();
            let sp = self.regs.gpr[4].wrapping_sub(size as u64) & size_mask(width);
            self.write_mem(SegReg::Ss, sp, 2, selector)?;
            self.set_sp(sp, width != 2);
            return Ok(());
        } else {
            self.read_operand(i, 0)? & size_mask(size)
        };
        self.push(value, size)
    }

    /// POP to a register, segment register or memory operand.
    fn pop_instruction(&mut self, i: &Instruction) -> Result<(), Exception> {
        let size = i.stack_pointer_increment() as usize;
        let (value, sp) = self.peek_stack(0, size)?;
        let wide = self.stack_width() != 2;
        if i.op0_kind() == OpKind::Register
            && let Some(seg) = SegReg::from_register(i.op0_register())
        {
            self.load_segment(seg, value as u16)?;
            if seg == SegReg::Ss {
                self.interrupt_shadow = true;
            }
            self.set_sp(sp, wide);
            return Ok(());
        }
        if i.op0_kind() == OpKind::Memory {
            // The memory operand's address uses the stack pointer after the pop.
            let saved = self.regs.gpr[4];
            self.set_sp(sp, wide);
            let result = self.write_operand(i, 0, value);
            if result.is_err() {
                self.regs.gpr[4] = saved;
            }
            return result;
        }
        self.set_sp(sp, wide);
        self.write_operand(i, 0, value)
    }

    /// PUSHA/PUSHAD: AX, CX, DX, BX, the original SP, BP, SI, DI.
    fn push_all(&mut self, i: &Instruction) -> Result<(), Exception> {
        if self.mode() == CpuMode::Long {
            return Err(Exception::ud());
        }
        let size = if i.mnemonic() == Mnemonic::Pushad {
            4
        } else {
            2
        };
        let original_sp = self.regs.gpr[4];
        let saved = self.regs.gpr[4];
        for index in 0..8 {
            let value = if index == 4 {
                original_sp
            } else {
                self.gpr(index)
            };
            if let Err(e) = self.push(value & size_mask(size), size) {
                self.regs.gpr[4] = saved;
                return Err(e);
            }
        }
        Ok(())
    }

    /// POPA/POPAD: the reverse of PUSHA, skipping the saved SP.
    fn pop_all(&mut self, i: &Instruction) -> Result<(), Exception> {
        if self.mode() == CpuMode::Long {
            return Err(Exception::ud());
        }
        let size = if i.mnemonic() == Mnemonic::Popad {
            4
        } else {
            2
        };
        let mut values = [0u64; 8];
        for (slot, value) in values.iter_mut().enumerate() {
            *value = self.peek_stack((slot * size) as u64, size)?.0;
        }
        let regs16 = [
            Register::DI,
            Register::SI,
            Register::BP,
            Register::SP,
            Register::BX,
            Register::DX,
            Register::CX,
            Register::AX,
        ];
        let regs32 = [
            Register::EDI,
            Register::ESI,
            Register::EBP,
            Register::ESP,
            Register::EBX,
            Register::EDX,
            Register::ECX,
            Register::EAX,
        ];
        let regs = if size == 4 { regs32 } else { regs16 };
        for (register, value) in regs.into_iter().zip(values) {
            if register != Register::SP && register != Register::ESP {
                self.set_reg(register, value);
            }
        }
        let width = self.stack_width();
        let sp = self.regs.gpr[4].wrapping_add(8 * size as u64) & size_mask(width);
        self.set_sp(sp, width != 2);
        Ok(())
    }

    /// PUSHF/PUSHFD/PUSHFQ; VM and RF are pushed as 0.
    fn push_flags(&mut self, i: &Instruction) -> Result<(), Exception> {
        if self.v86() && self.iopl() < 3 {
            return Err(Exception::gp(0));
        }
        let size = i.stack_pointer_increment().unsigned_abs() as usize;
        let flags = self.regs.rflags & !(RFLAGS_VM | RFLAGS_RF);
        self.push(flags & size_mask(size), size)
    }

    /// POPF/POPFD/POPFQ, with the rules of which flags the CPL and IOPL let it change.
    fn pop_flags(&mut self, i: &Instruction) -> Result<(), Exception> {
        if self.v86() && self.iopl() < 3 {
            return Err(Exception::gp(0));
        }
        let size = i.stack_pointer_increment() as usize;
        let (value, sp) = self.peek_stack(0, size)?;
        let mut changeable = ARITH_FLAGS | RFLAGS_TF | RFLAGS_DF | RFLAGS_NT;
        if size >= 4 {
            changeable |= RFLAGS_AC | RFLAGS_ID;
        }
        if self.mode() == CpuMode::Real || self.cpl == 0 {
            changeable |= RFLAGS_IOPL | RFLAGS_IF;
        } else if self.cpl <= self.iopl() {
            changeable |= RFLAGS_IF;
        }
        if size >= 4 && self.cpl == 0 && !self.v86() {
            // VIF and VIP are cleared; VM and RF are never set by POPF.
            changeable |= RFLAGS_VIF | RFLAGS_VIP;
        }
        let changeable = changeable & size_mask(size);
        let new =
            (self.regs.rflags & !changeable) | (value & changeable & !(RFLAGS_VIF | RFLAGS_VIP));
        self.regs.rflags = new | RFLAGS_FIXED;
        self.set_sp(sp, self.stack_width() != 2);
        Ok(())
    }

    /// The I/O privilege level.
    pub(crate) fn iopl(&self) -> u8 {
        ((self.regs.rflags & RFLAGS_IOPL) >> 12) as u8
    }

    /// ENTER: make a stack frame, copying `level` enclosing frame pointers.
    fn enter(&mut self, i: &Instruction) -> Result<(), Exception> {
        let size = i.stack_pointer_increment().unsigned_abs() as usize;
        let frame_size = u64::from(i.immediate16());
        let level = u64::from(i.immediate8_2nd() & 0x1f);
        let width = self.stack_width();
        let mask = size_mask(width);
        let bp_reg = match size {
            2 => Register::BP,
            4 => Register::EBP,
            _ => Register::RBP,
        };
        let frame_bp_reg = match width {
            2 => Register::BP,
            4 => Register::EBP,
            _ => Register::RBP,
        };
        let saved_rsp = self.regs.gpr[4];
        let saved_rbp = self.regs.gpr[5];
        let result = (|| {
            self.push(self.reg(bp_reg), size)?;
            let frame = self.regs.gpr[4] & mask;
            let mut bp = self.reg(frame_bp_reg);
            for _ in 1..level {
                bp = bp.wrapping_sub(size as u64) & mask;
                let value = self.read_mem(SegReg::Ss, bp, size)?;
                self.push(value, size)?;
            }
            if level > 0 {
                self.push(frame, size)?;
            }
            let sp = self.regs.gpr[4].wrapping_sub(frame_size) & mask;
            // The new stack top must be writable: the SDM checks it before committing.
            self.resolve(SegReg::Ss, sp, 1, true)?;
            self.set_reg(bp_reg, frame);
            self.set_sp(sp, width != 2);
            Ok(())
        })();
        if result.is_err() {
            self.regs.gpr[4] = saved_rsp;
            self.regs.gpr[5] = saved_rbp;
        }
        result
    }

    /// SETcc and CMOVcc.
    pub(super) fn conditional_move(&mut self, i: &Instruction) -> Result<(), Exception> {
        let taken = alu::condition(i.condition_code() as u8 - 1, self.regs.rflags);
        if super::is_setcc(i) {
            return self.write_operand(i, 0, taken.into());
        }
        // CMOVcc reads its source whatever the condition (a fault is taken either way), and
        // with a 32-bit operand size zero-extends the destination even when not moving.
        let value = self.read_operand(i, 1)?;
        if taken {
            self.write_operand(i, 0, value)
        } else {
            let current = self.read_operand(i, 0)?;
            self.write_operand(i, 0, current)
        }
    }
}
