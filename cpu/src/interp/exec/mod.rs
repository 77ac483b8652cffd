//! The instructions, by family: integer data movement and arithmetic, control transfer,
//! string operations, system instructions, SSE and MMX, and the x87 FPU.
//!
//! [`Interpreter::execute`] runs one decoded instruction. It reads its operands, computes, and
//! writes results; it moves RIP only through `next_rip`, which the caller commits when the
//! instruction completes, so an instruction that faults leaves RIP on itself.

mod control;
mod integer;
mod sse;
mod string;
mod system;
mod x87;

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::Interpreter;
use super::alu::OpSize;
use super::exception::Exception;

/// The instructions a LOCK prefix may precede (with a memory destination).
fn lockable(instruction: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        instruction.mnemonic(),
        Add | Adc
            | And
            | Btc
            | Btr
            | Bts
            | Cmpxchg
            | Cmpxchg8b
            | Cmpxchg16b
            | Dec
            | Inc
            | Neg
            | Not
            | Or
            | Sbb
            | Sub
            | Xor
            | Xadd
            | Xchg
    ) && instruction.op0_kind() == OpKind::Memory
}

/// SETcc.
pub(crate) fn is_setcc(instruction: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        instruction.mnemonic(),
        Seto | Setno
            | Setb
            | Setae
            | Sete
            | Setne
            | Setbe
            | Seta
            | Sets
            | Setns
            | Setp
            | Setnp
            | Setl
            | Setge
            | Setle
            | Setg
    )
}

/// CMOVcc.
fn is_cmovcc(instruction: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        instruction.mnemonic(),
        Cmovo
            | Cmovno
            | Cmovb
            | Cmovae
            | Cmove
            | Cmovne
            | Cmovbe
            | Cmova
            | Cmovs
            | Cmovns
            | Cmovp
            | Cmovnp
            | Cmovl
            | Cmovge
            | Cmovle
            | Cmovg
    )
}

/// The operand size of operand `n`, as the arithmetic core names it.
pub(crate) fn op_size(instruction: &Instruction, n: u32) -> OpSize {
    OpSize::from_bytes(Interpreter::operand_size(instruction, n) as u32)
        .expect("integer operands are 1, 2, 4 or 8 bytes")
}

impl Interpreter {
    /// Executes one decoded instruction.
    pub(super) fn execute(&mut self, instruction: &Instruction) -> Result<(), Exception> {
        if instruction.has_lock_prefix() && !lockable(instruction) {
            return Err(Exception::ud());
        }
        if instruction.is_jcc_short_or_near()
            || instruction.is_jcx_short()
            || instruction.is_loopcc()
            || instruction.is_loop()
        {
            return self.conditional_branch(instruction);
        }
        if is_setcc(instruction) || is_cmovcc(instruction) {
            return self.conditional_move(instruction);
        }
        if let Some(()) = self.execute_integer(instruction)? {
            return Ok(());
        }
        if let Some(()) = self.execute_control(instruction)? {
            return Ok(());
        }
        if let Some(()) = self.execute_string(instruction)? {
            return Ok(());
        }
        if let Some(()) = self.execute_system(instruction)? {
            return Ok(());
        }
        if let Some(()) = self.execute_sse(instruction)? {
            return Ok(());
        }
        if let Some(()) = self.execute_x87(instruction)? {
            return Ok(());
        }
        Err(Exception::ud())
    }
}
