//! An instruction's operands: registers by iced-x86's names, memory operands' effective
//! addresses, immediates, and places an instruction reads and then writes.

use iced_x86::{Instruction, OpKind, Register};

use super::Interpreter;
use super::exception::Exception;
use super::memory::Location;
use super::segmentation::SegReg;

/// A destination an instruction reads and writes back: a register, or resolved memory.
pub(crate) enum Place {
    /// A general register (any width).
    Register(Register),
    /// Memory, resolved for writing.
    Memory(Location),
}

/// The index of the 64-bit register holding `r` in [`crate::state::Registers::gpr`].
fn gpr_index(r: Register) -> usize {
    r.full_register() as usize - Register::RAX as usize
}

/// AH, CH, DH and BH: bits 15:8 of RAX, RCX, RDX and RBX.
fn is_high_byte(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

/// The mask of a value `bytes` long.
pub(crate) fn size_mask(bytes: usize) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}

impl Interpreter {
    /// Reads general register `r` at its width, zero-extended.
    pub(crate) fn reg(&self, r: Register) -> u64 {
        if r == Register::RIP || r == Register::EIP {
            return self.regs.rip;
        }
        if let Some(seg) = SegReg::from_register(r) {
            return self.segment(seg).selector.into();
        }
        let full = self.regs.gpr[gpr_index(r)];
        if is_high_byte(r) {
            return (full >> 8) & 0xff;
        }
        full & size_mask(r.size())
    }

    /// Writes general register `r` as the architecture does: 32-bit writes zero the upper half,
    /// 8- and 16-bit writes leave the rest of the register alone.
    pub(crate) fn set_reg(&mut self, r: Register, value: u64) {
        let slot = &mut self.regs.gpr[gpr_index(r)];
        *slot = match r.size() {
            1 if is_high_byte(r) => (*slot & !0xff00) | ((value & 0xff) << 8),
            1 => (*slot & !0xff) | (value & 0xff),
            2 => (*slot & !0xffff) | (value & 0xffff),
            4 => value & 0xffff_ffff,
            _ => value,
        };
    }

    /// The 64-bit register numbered `index` in the encoding's order (0 = RAX).
    pub(crate) fn gpr(&self, index: usize) -> u64 {
        self.regs.gpr[index]
    }

    /// The address size of a memory operand, in bytes (2, 4 or 8), as iced-x86 derives it.
    pub(crate) fn address_size(&self, instruction: &Instruction) -> usize {
        let register_size = |r: Register| if r == Register::None { 0 } else { r.size() };
        let from_registers =
            register_size(instruction.memory_base()).max(register_size(instruction.memory_index()));
        if from_registers != 0 {
            from_registers
        } else if instruction.memory_displ_size() >= 2 {
            instruction.memory_displ_size() as usize
        } else {
            self.code_bitness() as usize / 8
        }
    }

    /// The offset (within its segment) of the memory operand of `instruction`.
    pub(crate) fn effective_offset(&self, instruction: &Instruction) -> u64 {
        let mut offset = instruction.memory_displacement64();
        let base = instruction.memory_base();
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            offset = offset.wrapping_add(self.reg(base));
        }
        let index = instruction.memory_index();
        if index != Register::None {
            let scaled = self.reg(index) << instruction.memory_index_scale().trailing_zeros();
            offset = offset.wrapping_add(scaled);
        }
        offset & size_mask(self.address_size(instruction))
    }

    /// The segment of the memory operand of `instruction`, after any override.
    pub(crate) fn memory_segment(instruction: &Instruction) -> SegReg {
        SegReg::from_register(instruction.memory_segment()).unwrap_or(SegReg::Ds)
    }

    /// The size in bytes of operand `n`.
    pub(crate) fn operand_size(instruction: &Instruction, n: u32) -> usize {
        match instruction.op_kind(n) {
            OpKind::Register => instruction.op_register(n).size(),
            OpKind::Immediate8 => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            OpKind::Immediate64 | OpKind::Immediate8to64 | OpKind::Immediate32to64 => 8,
            _ => instruction.memory_size().size(),
        }
    }

    /// Reads operand `n`, zero-extended to 64 bits (immediates are sign-extended to the
    /// operand size first, as encoded).
    pub(crate) fn read_operand(
        &mut self,
        instruction: &Instruction,
        n: u32,
    ) -> Result<u64, Exception> {
        Ok(match instruction.op_kind(n) {
            OpKind::Register => self.reg(instruction.op_register(n)),
            OpKind::Memory => {
                let offset = self.effective_offset(instruction);
                let size = instruction.memory_size().size();
                self.read_mem(Self::memory_segment(instruction), offset, size)?
            }
            OpKind::Immediate8 => instruction.immediate8().into(),
            OpKind::Immediate16 => instruction.immediate16().into(),
            OpKind::Immediate32 => instruction.immediate32().into(),
            OpKind::Immediate64 => instruction.immediate64(),
            OpKind::Immediate8to16 => instruction.immediate8to16() as u16 as u64,
            OpKind::Immediate8to32 => instruction.immediate8to32() as u32 as u64,
            OpKind::Immediate8to64 => instruction.immediate8to64() as u64,
            OpKind::Immediate32to64 => instruction.immediate32to64() as u64,
            OpKind::Immediate8_2nd => instruction.immediate8_2nd().into(),
            _ => return Err(Exception::ud()),
        })
    }

    /// Writes operand `n`.
    pub(crate) fn write_operand(
        &mut self,
        instruction: &Instruction,
        n: u32,
        value: u64,
    ) -> Result<(), Exception> {
        match instruction.op_kind(n) {
            OpKind::Register => {
                self.set_reg(instruction.op_register(n), value);
                Ok(())
            }
            OpKind::Memory => {
                let offset = self.effective_offset(instruction);
                let size = instruction.memory_size().size();
                self.write_mem(Self::memory_segment(instruction), offset, size, value)
            }
            _ => Err(Exception::ud()),
        }
    }

    /// Resolves operand `n` (a register or memory) for reading and writing back.
    pub(crate) fn place(&mut self, instruction: &Instruction, n: u32) -> Result<Place, Exception> {
        match instruction.op_kind(n) {
            OpKind::Register => Ok(Place::Register(instruction.op_register(n))),
            OpKind::Memory => {
                let offset = self.effective_offset(instruction);
                let size = instruction.memory_size().size();
                let seg = Self::memory_segment(instruction);
                Ok(Place::Memory(self.resolve(seg, offset, size, true)?))
            }
            _ => Err(Exception::ud()),
        }
    }

    /// Reads a place.
    pub(crate) fn load(&mut self, place: &Place) -> u64 {
        match place {
            Place::Register(r) => self.reg(*r),
            Place::Memory(location) => self.read_value(location),
        }
    }

    /// Writes a place.
    pub(crate) fn store(&mut self, place: &Place, value: u64) {
        match place {
            Place::Register(r) => self.set_reg(*r, value),
            Place::Memory(location) => self.write_value(location, value),
        }
    }
}
