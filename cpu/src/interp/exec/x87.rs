//! The x87 FPU instructions, and WAIT/FWAIT.
//!
//! The control instructions whose effect depends on the guest's mode or that clear the
//! exception flags are written out here: FNINIT, FNCLEX, FLDCW, FNSTCW, FNSTSW, and the
//! environment and state loads and stores (FLDENV, FNSTENV, FRSTOR, FNSAVE) in their 14/28-
//! and 94/108-byte, real- and protected-mode layouts. Every other x87 instruction runs on the
//! host's x87 unit, as the guest encoded it (`fpu::x87`), with its memory operand read before
//! or written after.
//!
//! # Before an instruction runs
//!
//! #UD if its CPUID feature is not advertised (FISTTP needs SSE3, FCMOVcc and FCOMI CMOV).
//! #NM if CR0.EM or CR0.TS is set (WAIT: if CR0.MP and CR0.TS are). A waiting instruction
//! (all but FNINIT, FNCLEX, FNSTCW, FNSTSW, FNSTENV, FNSAVE and the 8087/287 leftovers
//! FNENI, FNDISI, FNSETPM) raises #MF if an unmasked exception is pending and CR0.NE is set;
//! with CR0.NE clear the error is left pending, as on a machine whose IGNNE# is asserted.
//!
//! # Stores and unmasked exceptions
//!
//! A store to memory that raises an unmasked invalid-operation, overflow or underflow
//! exception writes nothing (measured; an unmasked precision exception still stores).
//!
//! # The last instruction's pointers
//!
//! Every instruction but the control ones above, FLDCW, FLDENV and FRSTOR records its opcode
//! (FOP), its address (FIP, with CS in FCS) and, with a memory operand, that operand's offset
//! (FDP, with its segment in FDS); FNOP, FINCSTP, FDECSTP and FFREE do too, as the processor
//! does.

use iced_x86::{CpuidFeature, Instruction, MemorySize, Mnemonic};

use super::sse::control::{CR0_EM, CR0_MP, CR0_NE, CR0_TS};
use crate::interp::Interpreter;
use crate::interp::exception::{Exception, vector};
use crate::interp::fpu::{EnvironmentLayout, control_word, fsw, x87};
use crate::interp::segmentation::SegReg;
use crate::state::CpuMode;

/// Whether `i` is an x87 instruction.
fn is_x87(i: &Instruction) -> bool {
    use CpuidFeature::*;
    i.cpuid_features()
        .iter()
        .any(|f| matches!(f, FPU | FPU287 | FPU387))
}

/// The instructions that do not wait for a pending x87 exception.
fn no_wait(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Fninit | Fnclex | Fnstcw | Fnstsw | Fnstenv | Fnsave | Fneni | Fndisi | Fnsetpm
    )
}

/// The instructions whose memory operand is written.
fn stores(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(m, Fst | Fstp | Fist | Fistp | Fisttp | Fbstp)
}

/// The legacy prefixes an x87 instruction may carry before its opcode byte.
fn is_prefix(byte: u8, long_mode: bool) -> bool {
    matches!(
        byte,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
    ) || (long_mode && byte & 0xf0 == 0x40)
}

impl Interpreter {
    /// Runs `instruction` if it is an x87 instruction or WAIT.
    pub(super) fn execute_x87(
        &mut self,
        instruction: &Instruction,
    ) -> Result<Option<()>, Exception> {
        let i = instruction;
        let cr0 = self.sregs.cr0;
        if i.mnemonic() == Mnemonic::Wait {
            if cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
                return Err(Exception::nm());
            }
            self.check_x87_pending()?;
            return Ok(Some(()));
        }
        if !is_x87(i) {
            return Ok(None);
        }
        self.require_cpuid_features(i)?;
        if cr0 & (CR0_EM | CR0_TS) != 0 {
            return Err(Exception::nm());
        }
        let m = i.mnemonic();
        if !no_wait(m) {
            self.check_x87_pending()?;
        }
        match m {
            Mnemonic::Fninit => self.fpu.init(),
            Mnemonic::Fnclex => {
                let clear = fsw::EXCEPTIONS | fsw::SF | fsw::ES | fsw::B;
                self.fpu.state.fsw &= !clear;
            }
            Mnemonic::Fldcw => {
                let value = self.read_operand(i, 0)? as u16;
                self.fpu.state.fcw = control_word(value);
                self.fpu.state.update_error_summary();
            }
            Mnemonic::Fnstcw => self.write_operand(i, 0, self.fpu.state.fcw.into())?,
            Mnemonic::Fnstsw => self.write_operand(i, 0, self.fpu.state.fsw.into())?,
            Mnemonic::Fnstenv | Mnemonic::Fnsave => self.store_x87_environment(i)?,
            Mnemonic::Fldenv | Mnemonic::Frstor => self.load_x87_environment(i)?,
            _ => self.x87_on_host(i)?,
        }
        Ok(Some(()))
    }

    /// #MF if an unmasked x87 exception is pending and CR0.NE is set.
    pub(super) fn check_x87_pending(&self) -> Result<(), Exception> {
        if self.fpu.x87_pending() && self.sregs.cr0 & CR0_NE != 0 {
            return Err(Exception::new(vector::MF));
        }
        Ok(())
    }

    /// The layout of the environment `i` (FNSTENV, FLDENV, FNSAVE or FRSTOR) moves.
    fn environment_layout(&self, i: &Instruction) -> EnvironmentLayout {
        EnvironmentLayout {
            wide: matches!(
                i.memory_size(),
                MemorySize::FpuEnv28 | MemorySize::FpuState108
            ),
            real: self.mode() == CpuMode::Real || self.v86(),
        }
    }

    /// FNSTENV (then every exception masked) and FNSAVE (then FNINIT).
    fn store_x87_environment(&mut self, i: &Instruction) -> Result<(), Exception> {
        let layout = self.environment_layout(i);
        let size = i.memory_size().size();
        let seg = Self::memory_segment(i);
        let offset = self.effective_offset(i);
        let location = self.resolve(seg, offset, size, true)?;
        let mut data = [0u8; 108];
        let env = layout.len();
        data[..env].copy_from_slice(&self.fpu.store_environment(layout)[..env]);
        if i.mnemonic() == Mnemonic::Fnsave {
            data[env..env + 80].copy_from_slice(&self.fpu.store_registers());
            self.fpu.init();
        } else {
            self.fpu.state.fcw |= fsw::EXCEPTIONS;
            self.fpu.state.update_error_summary();
        }
        self.write_location(&location, &data[..size]);
        Ok(())
    }

    /// FLDENV and FRSTOR.
    fn load_x87_environment(&mut self, i: &Instruction) -> Result<(), Exception> {
        let layout = self.environment_layout(i);
        let size = i.memory_size().size();
        let seg = Self::memory_segment(i);
        let offset = self.effective_offset(i);
        let location = self.resolve(seg, offset, size, false)?;
        let mut data = [0u8; 108];
        self.read_location(&location, &mut data[..size]);
        let env = layout.len();
        self.fpu.load_environment(&data[..env], layout);
        if i.mnemonic() == Mnemonic::Frstor {
            self.fpu.load_registers(&data[env..env + 80]);
        }
        Ok(())
    }

    /// The opcode byte (0xd8-0xdf) and ModR/M byte of the current x87 instruction, read
    /// again from its bytes.
    fn x87_encoding(&mut self, i: &Instruction) -> Result<(u8, u8), Exception> {
        let mut bytes = [0u8; 15];
        let len = i.len();
        self.fetch_bytes(self.regs.rip, &mut bytes[..len])?;
        let long_mode = self.mode() == CpuMode::Long;
        let at = bytes[..len]
            .iter()
            .position(|&byte| !is_prefix(byte, long_mode))
            .expect("an x87 instruction has an opcode byte");
        Ok((bytes[at], bytes[at + 1]))
    }

    /// Runs `i` on the host's x87 unit (see the module documentation).
    fn x87_on_host(&mut self, i: &Instruction) -> Result<(), Exception> {
        let (opcode, modrm) = self.x87_encoding(i)?;
        let mut data_pointer = None;
        if modrm >= 0xc0 {
            let outcome = x87::run_register(&mut self.fpu.state, opcode, modrm, self.regs.rflags);
            self.regs.rflags = outcome.rflags;
        } else {
            let size = i.memory_size().size();
            let seg = Self::memory_segment(i);
            let offset = self.effective_offset(i);
            let reg = (modrm >> 3) & 7;
            let mut operand = [0u8; 16];
            if stores(i.mnemonic()) {
                let location = self.resolve(seg, offset, size, true)?;
                let raised = x87::run_memory(&mut self.fpu.state, opcode, reg, &mut operand);
                if raised & !self.fpu.state.fcw & fsw::REFUSE_STORE == 0 {
                    self.write_location(&location, &operand[..size]);
                }
            } else {
                let location = self.resolve(seg, offset, size, false)?;
                self.read_location(&location, &mut operand[..size]);
                x87::run_memory(&mut self.fpu.state, opcode, reg, &mut operand);
            }
            data_pointer = Some((seg, offset));
        }
        // Of the instructions run here, the no-wait ones (FNENI, FNDISI, FNSETPM) leave the
        // pointers alone.
        if !no_wait(i.mnemonic()) {
            self.fpu.state.fop = (u16::from(opcode & 7) << 8) | u16::from(modrm);
            self.fpu.state.fip = self.regs.rip;
            self.fpu.fcs = self.segment(SegReg::Cs).selector;
            if let Some((seg, offset)) = data_pointer {
                self.fpu.state.fdp = offset;
                self.fpu.fds = self.segment(seg).selector;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
