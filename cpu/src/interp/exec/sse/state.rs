//! LDMXCSR, STMXCSR, FXSAVE and FXRSTOR.
//!
//! FXSAVE writes what the processor writes and no more: the x87 part, MXCSR and the XMM
//! registers (XMM0-XMM7 outside 64-bit mode), but neither MXCSR nor the XMM registers while
//! CR4.OSFXSR is clear, and never the reserved bytes from 416 on. FXSAVE64 (REX.W) stores
//! 64-bit instruction and data pointers, FXSAVE 32-bit ones with their selectors. The operand
//! must be 16-byte aligned (#GP(0)).

use iced_x86::{Instruction, Mnemonic};

use super::control::CR4_OSFXSR;
use crate::interp::Interpreter;
use crate::interp::exception::Exception;
use crate::interp::fpu::{self, MXCSR_MASK};
use crate::interp::segmentation::SegReg;
use crate::state::CpuMode;

/// The size of an FXSAVE area.
const AREA: usize = 512;

impl Interpreter {
    /// Runs LDMXCSR, STMXCSR, FXSAVE or FXRSTOR (either operand size).
    pub(super) fn simd_state(&mut self, i: &Instruction) -> Result<(), Exception> {
        match i.mnemonic() {
            Mnemonic::Ldmxcsr => {
                let value = self.read_operand(i, 0)? as u32;
                if value & !MXCSR_MASK != 0 {
                    return Err(Exception::gp(0));
                }
                self.fpu.state.mxcsr = value;
                Ok(())
            }
            Mnemonic::Stmxcsr => self.write_operand(i, 0, self.fpu.state.mxcsr.into()),
            Mnemonic::Fxsave | Mnemonic::Fxsave64 => {
                self.fxsave(i, i.mnemonic() == Mnemonic::Fxsave64)
            }
            _ => self.fxrstor(i, i.mnemonic() == Mnemonic::Fxrstor64),
        }
    }

    /// The segment and offset of an FXSAVE area, after the segment and alignment checks.
    fn fx_area(&mut self, i: &Instruction, write: bool) -> Result<(SegReg, u64), Exception> {
        let seg = Self::memory_segment(i);
        let offset = self.effective_offset(i);
        let linear = self.linear(seg, offset, AREA as u64, write)?;
        if linear & 15 != 0 {
            return Err(Exception::gp(0));
        }
        Ok((seg, offset))
    }

    /// How many XMM registers FXSAVE and FXRSTOR move: 16 in 64-bit mode, else 8.
    fn fx_xmm_count(&self) -> usize {
        if self.mode() == CpuMode::Long { 16 } else { 8 }
    }

    /// FXSAVE and FXSAVE64.
    fn fxsave(&mut self, i: &Instruction, wide: bool) -> Result<(), Exception> {
        let (seg, offset) = self.fx_area(i, true)?;
        let pointers = fpu::host_fxsave_stores_pointers() || self.fpu.x87_pending();
        let image = self.fpu.fxsave_image(wide, pointers);
        // Bytes 24-31 are MXCSR and its mask, 160 on the XMM registers.
        let (first, second) = if self.sregs.cr4 & CR4_OSFXSR != 0 {
            (0..160 + 16 * self.fx_xmm_count(), None)
        } else {
            (0..24, Some(32..160))
        };
        // Every page is checked before a byte is written.
        let first_location = self.resolve(seg, offset, first.len(), true)?;
        let second_location = match &second {
            Some(range) => {
                Some(self.resolve(seg, offset + range.start as u64, range.len(), true)?)
            }
            None => None,
        };
        self.write_location(&first_location, &image[first]);
        if let (Some(location), Some(range)) = (second_location, second) {
            self.write_location(&location, &image[range]);
        }
        Ok(())
    }

    /// FXRSTOR and FXRSTOR64: #GP(0) if the image's MXCSR sets a reserved bit.
    fn fxrstor(&mut self, i: &Instruction, wide: bool) -> Result<(), Exception> {
        let (seg, offset) = self.fx_area(i, false)?;
        let location = self.resolve(seg, offset, AREA, false)?;
        let mut image = [0u8; AREA];
        self.read_location(&location, &mut image);
        let sse = (self.sregs.cr4 & CR4_OSFXSR != 0).then(|| self.fx_xmm_count());
        self.fpu
            .load_fxsave_image(&image, wide, sse)
            .map_err(|_| Exception::gp(0))
    }
}
