//! SSE, SSE2, SSE3, SSSE3, SSE4.1 and SSE4.2, their forms on MMX registers, and MMX: data
//! movement, packed integer and floating-point arithmetic, conversions, comparisons, string
//! comparisons, CRC32, MXCSR, FXSAVE and FXRSTOR.
//!
//! # What runs where
//!
//! Arithmetic, comparisons and conversions run on the host (`fpu::simd`), so that results and
//! MXCSR flags are the processor's own. Data movement with an immediate or a mask (shuffles,
//! blends, inserts, extracts) is written out in `lanes`; MXCSR, FXSAVE and FXRSTOR in `state`.
//!
//! # Before an instruction runs
//!
//! An instruction of an extension the CPU does not advertise raises #UD. Then, for the
//! instructions on XMM or MMX registers: #UD if CR0.EM is set, or if CR4.OSFXSR is clear and
//! the instruction uses XMM registers or MXCSR; #NM if CR0.TS is set; and, for those on MMX
//! registers, #MF if an unmasked x87 exception is pending and CR0.NE is set (with CR0.NE
//! clear the machine behaves as one whose IGNNE# input is asserted: the error is left
//! pending). FXSAVE and FXRSTOR raise #NM if CR0.EM or CR0.TS is set; CRC32 and MOVNTI make no
//! check at all. A 16-byte memory operand must be 16-byte aligned (#GP(0)) except for the
//! unaligned loads and stores and the SSE4.2 string comparisons.
//!
//! # SIMD floating-point exceptions
//!
//! The host computes with every exception masked and reports the flags raised. If the
//! guest's MXCSR masks them all, the result is written and the flags are set. Otherwise the
//! destination is left alone, MXCSR gets the flags the processor sets for an unmasked
//! exception (SDM Vol. 1, 11.5.1, as measured: the pre-computation flags IE, DE and ZE alone
//! if one of those is unmasked, else every flag raised), and the instruction raises #XM, or
//! #UD if CR4.OSXMMEXCPT is clear. An unmasked underflow is raised by a tiny result even when
//! it is exact, which a masked computation does not flag; when UE is unmasked the operation is
//! run a second time with FTZ set, which flags tininess alone. And with OE or UE unmasked, the
//! processor sets PE for an overflowing or underflowing element only if its result, rounded
//! with an unbounded exponent, is inexact; `precision` recomputes PE element by element for
//! the operations that can overflow or underflow.
//!
//! # MMX registers
//!
//! MMn is the low 64 bits of x87 physical register n; a write sets its exponent bits to all
//! ones. Every instruction that uses an MMX register (but EMMS) sets TOP to 0 and tags every
//! register valid, once it completes; EMMS tags them all empty.

mod lanes;
mod precision;
mod state;

use iced_x86::{CpuidFeature, Instruction, Mnemonic, OpKind, Register};

use crate::interp::alu::ARITH_FLAGS;
use crate::interp::exception::{Exception, vector};
use crate::interp::fpu::{mxcsr, simd};
use crate::interp::memory::Location;
use crate::interp::operands::size_mask;
use crate::interp::{Interpreter, cpuid};
use lanes::mask;

/// The control-register bits that govern the x87 and SIMD units.
pub(super) mod control {
    /// CR0.MP: WAIT/FWAIT honours CR0.TS.
    pub const CR0_MP: u64 = 1 << 1;
    /// CR0.EM: no x87 unit; x87 instructions raise #NM and SIMD ones #UD.
    pub const CR0_EM: u64 = 1 << 2;
    /// CR0.TS: the FPU state belongs to another task (#NM).
    pub const CR0_TS: u64 = 1 << 3;
    /// CR0.NE: x87 errors are reported as #MF.
    pub const CR0_NE: u64 = 1 << 5;
    /// CR4.OSFXSR: the OS saves SSE state with FXSAVE; SSE instructions are allowed.
    pub const CR4_OSFXSR: u64 = 1 << 9;
    /// CR4.OSXMMEXCPT: the OS handles #XM.
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
}

use control::{CR0_EM, CR0_TS, CR4_OSFXSR, CR4_OSXMMEXCPT};

/// All ones in the low 64 bits.
const LOW: u128 = u64::MAX as u128;

/// Which checks an instruction of this family makes before it runs.
enum Unit {
    /// An integer instruction of an SSE extension (CRC32, MOVNTI): none.
    Integer,
    /// FXSAVE and FXRSTOR: #NM if CR0.EM or CR0.TS is set.
    State,
    /// Everything on XMM or MMX registers or MXCSR.
    Vector,
}

/// The unit of `i`, if it belongs to this family (x87 instructions belong to `x87`, even
/// FISTTP of SSE3).
fn unit(i: &Instruction) -> Option<Unit> {
    use CpuidFeature::*;
    let features = i.cpuid_features();
    let x87 = features.iter().any(|f| matches!(f, FPU | FPU287 | FPU387));
    let simd = features
        .iter()
        .any(|f| matches!(f, MMX | SSE | SSE2 | SSE3 | SSSE3 | SSE4_1 | SSE4_2 | FXSR));
    if x87 || !simd {
        return None;
    }
    Some(match i.mnemonic() {
        Mnemonic::Crc32 | Mnemonic::Movnti => Unit::Integer,
        Mnemonic::Fxsave | Mnemonic::Fxsave64 | Mnemonic::Fxrstor | Mnemonic::Fxrstor64 => {
            Unit::State
        }
        _ => Unit::Vector,
    })
}

/// Whether a 16-byte memory operand of `i` must be 16-byte aligned: every legacy SSE
/// instruction's but the explicitly unaligned loads and stores' and the string comparisons'.
fn requires_alignment(i: &Instruction) -> bool {
    use Mnemonic::*;
    !matches!(
        i.mnemonic(),
        Movups
            | Movupd
            | Movdqu
            | Lddqu
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
    )
}

/// Operand `n` of `i` is a register for which `class` holds.
fn register_operand(i: &Instruction, n: u32, class: fn(Register) -> bool) -> bool {
    i.op_kind(n) == OpKind::Register && class(i.op_register(n))
}

/// Some operand of `i` is a register for which `class` holds.
fn has_register(i: &Instruction, class: fn(Register) -> bool) -> bool {
    (0..i.op_count()).any(|n| register_operand(i, n, class))
}

/// The index of XMM register `r`.
fn xmm_index(r: Register) -> usize {
    r as usize - Register::XMM0 as usize
}

/// The index of MMX register `r`.
fn mm_index(r: Register) -> usize {
    r as usize - Register::MM0 as usize
}

/// The length PCMPESTRx64 takes from RAX or RDX, as its 32-bit form would take it from EAX or
/// EDX: the absolute value, saturated at the 16 elements any form can have.
fn saturated_length(value: u64) -> u32 {
    (value as i64).unsigned_abs().min(16) as u32
}

impl Interpreter {
    /// Runs `instruction` if it belongs to the SSE and MMX family.
    pub(super) fn execute_sse(
        &mut self,
        instruction: &Instruction,
    ) -> Result<Option<()>, Exception> {
        let i = instruction;
        let Some(unit) = unit(i) else {
            return Ok(None);
        };
        self.require_cpuid_features(i)?;
        let uses_mm = has_register(i, Register::is_mm) || i.mnemonic() == Mnemonic::Emms;
        match unit {
            Unit::Integer => {}
            Unit::State => {
                if self.sregs.cr0 & (CR0_EM | CR0_TS) != 0 {
                    return Err(Exception::nm());
                }
            }
            Unit::Vector => self.check_vector_unit(i, uses_mm)?,
        }
        let done = self.simd(i)?;
        if done.is_some() && uses_mm && i.mnemonic() != Mnemonic::Emms {
            self.fpu.enter_mmx();
        }
        Ok(done)
    }

    /// #UD unless the CPU advertises every CPUID feature `i` needs.
    pub(super) fn require_cpuid_features(&self, i: &Instruction) -> Result<(), Exception> {
        if i.cpuid_features().iter().all(|&f| cpuid::advertises(f)) {
            Ok(())
        } else {
            Err(Exception::ud())
        }
    }

    /// The checks of an instruction on XMM or MMX registers (see the module documentation).
    fn check_vector_unit(&self, i: &Instruction, uses_mm: bool) -> Result<(), Exception> {
        if self.sregs.cr0 & CR0_EM != 0 {
            return Err(Exception::ud());
        }
        let sse = has_register(i, Register::is_xmm)
            || matches!(i.mnemonic(), Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr);
        if sse && self.sregs.cr4 & CR4_OSFXSR == 0 {
            return Err(Exception::ud());
        }
        if self.sregs.cr0 & CR0_TS != 0 {
            return Err(Exception::nm());
        }
        if uses_mm {
            self.check_x87_pending()?;
        }
        Ok(())
    }

    /// XMM register `r`.
    fn xmm(&self, r: Register) -> u128 {
        self.fpu.state.xmm[xmm_index(r)]
    }

    /// Writes XMM register `r`.
    fn set_xmm(&mut self, r: Register, value: u128) {
        self.fpu.state.xmm[xmm_index(r)] = value;
    }

    /// Resolves the memory operand of `i` for reading or writing, checking the alignment of a
    /// 16-byte operand first.
    fn vector_memory(&mut self, i: &Instruction, write: bool) -> Result<Location, Exception> {
        let size = i.memory_size().size();
        let seg = Self::memory_segment(i);
        let offset = self.effective_offset(i);
        if size == 16 && requires_alignment(i) {
            let linear = self.linear(seg, offset, 16, write)?;
            if linear & 15 != 0 {
                return Err(Exception::gp(0));
            }
        }
        self.resolve(seg, offset, size, write)
    }

    /// Reads operand `n` of `i`: an XMM, MMX or general register, memory (its width,
    /// zero-extended) or an immediate.
    fn vector_operand(&mut self, i: &Instruction, n: u32) -> Result<u128, Exception> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                Ok(if r.is_xmm() {
                    self.xmm(r)
                } else if r.is_mm() {
                    self.fpu.mm(mm_index(r)).into()
                } else {
                    self.reg(r).into()
                })
            }
            OpKind::Memory => {
                let location = self.vector_memory(i, false)?;
                let mut bytes = [0u8; 16];
                let size = i.memory_size().size();
                self.read_location(&location, &mut bytes[..size]);
                Ok(u128::from_le_bytes(bytes))
            }
            _ => Ok(self.read_operand(i, n)?.into()),
        }
    }

    /// Writes operand `n` of `i`: all of an XMM register, the low 64 bits to an MMX register,
    /// a general register as a move does, or the operand's width to memory.
    fn set_vector_operand(
        &mut self,
        i: &Instruction,
        n: u32,
        value: u128,
    ) -> Result<(), Exception> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                if r.is_xmm() {
                    self.set_xmm(r, value);
                } else if r.is_mm() {
                    self.fpu.set_mm(mm_index(r), value as u64);
                } else {
                    self.set_reg(r, value as u64);
                }
                Ok(())
            }
            _ => {
                let location = self.vector_memory(i, true)?;
                let size = i.memory_size().size();
                self.write_location(&location, &value.to_le_bytes()[..size]);
                Ok(())
            }
        }
    }

    /// Runs a floating-point operation under the guest's MXCSR (see the module
    /// documentation): `op(mxcsr)` gives the result and the exception flags raised with every
    /// exception masked.
    fn simd_float<T>(&mut self, op: impl Fn(u32) -> (T, u32)) -> Result<T, Exception> {
        self.simd_float_with(op, |_, raised| raised)
    }

    /// [`Interpreter::simd_float`], with `post(mxcsr, raised)` giving the flags the processor
    /// sets when an unmasked post-computation exception is raised.
    fn simd_float_with<T>(
        &mut self,
        op: impl Fn(u32) -> (T, u32),
        post: impl Fn(u32, u32) -> u32,
    ) -> Result<T, Exception> {
        let control = self.fpu.state.mxcsr;
        let (result, mut raised) = op(control);
        let unmasked = |flags: u32| flags & !(control >> 7) & mxcsr::FLAGS;
        if unmasked(mxcsr::UE) != 0 {
            let (_, flushed) = op(control | mxcsr::FTZ);
            raised |= flushed & mxcsr::UE;
        }
        if unmasked(raised) == 0 {
            self.fpu.state.mxcsr |= raised;
            return Ok(result);
        }
        self.fpu.state.mxcsr |= if unmasked(raised) & mxcsr::PRE_COMPUTATION != 0 {
            raised & mxcsr::PRE_COMPUTATION
        } else {
            post(control, raised)
        };
        Err(if self.sregs.cr4 & CR4_OSXMMEXCPT != 0 {
            Exception::new(vector::XM)
        } else {
            Exception::ud()
        })
    }

    /// Sets the arithmetic flags to those a comparison left.
    fn set_compare_flags(&mut self, flags: u64) {
        self.regs.rflags = (self.regs.rflags & !ARITH_FLAGS) | (flags & ARITH_FLAGS);
    }

    /// Runs `i`, one of this family, once the checks have passed; `None` if it is not one
    /// Umbra implements.
    fn simd(&mut self, i: &Instruction) -> Result<Option<()>, Exception> {
        use Mnemonic::*;
        let m = i.mnemonic();
        match m {
            Movaps | Movapd | Movups | Movupd | Movdqa | Movdqu | Lddqu | Movntps | Movntpd
            | Movntdq | Movntdqa | Movntq | Movnti | Movq2dq | Movdq2q => {
                let value = self.vector_operand(i, 1)?;
                self.set_vector_operand(i, 0, value)?;
            }
            // A move to an XMM register zero-extends; to memory it writes the width.
            Movd | Movq => {
                let width = if m == Movd { 4 } else { 8 };
                let value = self.vector_operand(i, 1)? & mask(width);
                self.set_vector_operand(i, 0, value)?;
            }
            Movss | Movsd => {
                let width = if m == Movss { 4 } else { 8 };
                let value = self.vector_operand(i, 1)? & mask(width);
                // Between registers the low element is merged; a load zero-extends.
                let value = if i.op0_kind() == OpKind::Register && i.op1_kind() == OpKind::Register
                {
                    (self.xmm(i.op0_register()) & !mask(width)) | value
                } else {
                    value
                };
                self.set_vector_operand(i, 0, value)?;
            }
            Movlps | Movlpd | Movhps | Movhpd | Movhlps | Movlhps => {
                let src = self.vector_operand(i, 1)?;
                let value = if i.op0_kind() == OpKind::Memory {
                    if matches!(m, Movhps | Movhpd) {
                        src >> 64
                    } else {
                        src & LOW
                    }
                } else {
                    let dst = self.xmm(i.op0_register());
                    match m {
                        Movlps | Movlpd => (dst & !LOW) | (src & LOW),
                        Movhlps => (dst & !LOW) | (src >> 64),
                        _ => (dst & LOW) | (src << 64),
                    }
                };
                self.set_vector_operand(i, 0, value)?;
            }
            Movmskps | Movmskpd | Pmovmskb => {
                let src = self.vector_operand(i, 1)?;
                let (size, count) = match m {
                    Movmskps => (4, 4),
                    Movmskpd => (8, 2),
                    _ if register_operand(i, 1, Register::is_mm) => (1, 8),
                    _ => (1, 16),
                };
                self.set_vector_operand(i, 0, lanes::sign_mask(src, size, count))?;
            }
            Pextrb | Pextrw | Pextrd | Pextrq | Extractps => {
                let src = self.vector_operand(i, 1)?;
                let size = element_size(m);
                let count = lane_count(i, 1, size);
                let index = usize::from(i.immediate8()) % count;
                self.set_vector_operand(i, 0, lanes::element(src, size, index))?;
            }
            Pinsrb | Pinsrw | Pinsrd | Pinsrq => {
                let value = self.vector_operand(i, 1)?;
                let dst = self.vector_operand(i, 0)?;
                let size = element_size(m);
                let count = lane_count(i, 0, size);
                let index = usize::from(i.immediate8()) % count;
                let inserted = lanes::with_element(dst, size, index, value);
                self.set_vector_operand(i, 0, inserted)?;
            }
            Insertps => {
                let src = self.vector_operand(i, 1)?;
                let dst = self.xmm(i.op0_register());
                let register_source = i.op1_kind() == OpKind::Register;
                let value = lanes::insertps(dst, src, i.immediate8(), register_source);
                self.set_xmm(i.op0_register(), value);
            }
            Pshufd | Pshufhw | Pshuflw | Pshufw => {
                let src = self.vector_operand(i, 1)?;
                let imm = i.immediate8();
                let value = match m {
                    Pshufd => lanes::pshufd(src, imm),
                    Pshufhw => lanes::pshufhw(src, imm),
                    Pshuflw => lanes::pshuflw(src, imm),
                    _ => lanes::pshufw(src, imm),
                };
                self.set_vector_operand(i, 0, value)?;
            }
            Shufps | Shufpd | Palignr | Pblendw | Blendps | Blendpd | Mpsadbw => {
                let src = self.vector_operand(i, 1)?;
                let dst = self.vector_operand(i, 0)?;
                let imm = i.immediate8();
                let value = match m {
                    Shufps => lanes::shufps(dst, src, imm),
                    Shufpd => lanes::shufpd(dst, src, imm),
                    Palignr if register_operand(i, 0, Register::is_mm) => {
                        lanes::palignr(dst, src, imm, 8)
                    }
                    Palignr => lanes::palignr(dst, src, imm, 16),
                    Pblendw => lanes::blend(dst, src, imm, 2),
                    Blendps => lanes::blend(dst, src, imm, 4),
                    Blendpd => lanes::blend(dst, src, imm, 8),
                    _ => lanes::mpsadbw(dst, src, imm),
                };
                self.set_vector_operand(i, 0, value)?;
            }
            Pblendvb | Blendvps | Blendvpd => {
                let src = self.vector_operand(i, 1)?;
                let dst = self.xmm(i.op0_register());
                let size = match m {
                    Pblendvb => 1,
                    Blendvps => 4,
                    _ => 8,
                };
                let value = lanes::blend_variable(dst, src, self.fpu.state.xmm[0], size);
                self.set_xmm(i.op0_register(), value);
            }
            Pslldq | Psrldq => {
                let value = self.xmm(i.op0_register());
                let imm = i.immediate8();
                let shifted = if m == Pslldq {
                    lanes::pslldq(value, imm)
                } else {
                    lanes::psrldq(value, imm)
                };
                self.set_xmm(i.op0_register(), shifted);
            }
            Maskmovq | Maskmovdqu => self.masked_move(i)?,
            Emms => self.fpu.state.ftw = 0,
            Ldmxcsr | Stmxcsr | Fxsave | Fxsave64 | Fxrstor | Fxrstor64 => self.simd_state(i)?,
            Cvtpi2ps | Cvtps2pi | Cvttps2pi | Cvtpi2pd | Cvtpd2pi | Cvttpd2pi => {
                self.mmx_conversion(i)?
            }
            Cvtsi2ss | Cvtsi2sd => {
                let size = Self::operand_size(i, 1);
                let convert = simd::from_integer(m, size).expect("CVTSI2SS and CVTSI2SD");
                let value = self.vector_operand(i, 1)? as u64;
                let dst = i.op0_register();
                let old = self.xmm(dst);
                let result = self.simd_float(|control| convert(old, value, control))?;
                self.set_xmm(dst, result);
            }
            Cvtss2si | Cvttss2si | Cvtsd2si | Cvttsd2si => {
                let dst = i.op0_register();
                let convert = simd::to_integer(m, dst.size()).expect("CVT(T)SS2SI, CVT(T)SD2SI");
                let src = self.vector_operand(i, 1)?;
                let value = self.simd_float(|control| convert(src, control))?;
                self.set_reg(dst, value);
            }
            Comiss | Ucomiss | Comisd | Ucomisd => {
                let compare = simd::compare_op(m).expect("(U)COMISS and (U)COMISD");
                let a = self.xmm(i.op0_register());
                let b = self.vector_operand(i, 1)?;
                let flags = self.simd_float(|control| compare(a, b, control))?;
                self.set_compare_flags(flags);
            }
            Ptest => {
                let a = self.xmm(i.op0_register());
                let b = self.vector_operand(i, 1)?;
                self.set_compare_flags(simd::ptest(a, b));
            }
            Dpps | Dppd => self.dot_product(i)?,
            Pcmpestri | Pcmpestri64 | Pcmpestrm | Pcmpestrm64 | Pcmpistri | Pcmpistrm => {
                self.string_compare(i)?
            }
            Crc32 => {
                let crc = self.vector_operand(i, 0)? as u64;
                let value = self.vector_operand(i, 1)? as u64;
                let result = simd::crc32(crc, value, Self::operand_size(i, 1));
                self.set_vector_operand(i, 0, result.into())?;
            }
            _ => return self.simd_native(i),
        }
        Ok(Some(()))
    }

    /// The operations run as one host instruction: `dst = op(dst, src)` on MMX or XMM
    /// registers, with an immediate for some.
    fn simd_native(&mut self, i: &Instruction) -> Result<Option<()>, Exception> {
        let m = i.mnemonic();
        let dst = i.op0_register();
        if register_operand(i, 0, Register::is_mm) {
            let Some(op) = simd::mmx_op(m) else {
                return Ok(None);
            };
            let src = self.vector_operand(i, 1)? as u64;
            let value = op(self.fpu.mm(mm_index(dst)), src);
            self.fpu.set_mm(mm_index(dst), value);
        } else if let Some(op) = simd::xmm_op(m) {
            let src = self.vector_operand(i, 1)?;
            let value = op(self.xmm(dst), src);
            self.set_xmm(dst, value);
        } else if simd::float_op(m).is_some() {
            let src = self.vector_operand(i, 1)?;
            let value = self.float_step(m, self.xmm(dst), src)?;
            self.set_xmm(dst, value);
        } else if let Some(table) = simd::float_imm_op(m) {
            let op = simd::at(table, i.immediate8());
            let src = self.vector_operand(i, 1)?;
            let old = self.xmm(dst);
            let value = self.simd_float(|control| op(old, src, control))?;
            self.set_xmm(dst, value);
        } else {
            return Ok(None);
        }
        Ok(Some(()))
    }

    /// One floating-point operation run natively, `m` on `a` and `b`, with the precision flags
    /// of an unmasked overflow or underflow as `precision` gives them.
    fn float_step(&mut self, m: Mnemonic, a: u128, b: u128) -> Result<u128, Exception> {
        let op = simd::float_op(m).expect("an operation run natively");
        self.simd_float_with(
            |control| op(a, b, control),
            |control, raised| {
                precision::unmasked_response_flags(m, op, a, b, control).unwrap_or(raised)
            },
        )
    }

    /// DPPS and DPPD, step by step as the SDM computes them: the products the immediate's
    /// high nibble selects (+0.0 for the others), their sums in pairs, then the total, each
    /// step rounded and raising its exceptions as MULPS, ADDPS and ADDSS (or their double
    /// forms) do; an unmasked exception stops the instruction at the step that raises it,
    /// with the flags of the steps before. The total goes to the elements the low nibble
    /// selects, +0.0 to the others.
    fn dot_product(&mut self, i: &Instruction) -> Result<(), Exception> {
        use Mnemonic::*;
        let double = i.mnemonic() == Dppd;
        let size = if double { 8 } else { 4 };
        let count = 16 / size;
        let imm = i.immediate8();
        let selected = |value: u128, first_bit: u8| {
            (0..count)
                .filter(|k| imm & (first_bit << k) != 0)
                .fold(0, |x, k| {
                    lanes::with_element(x, size, k, lanes::element(value, size, k))
                })
        };
        let a = self.xmm(i.op0_register());
        let b = self.vector_operand(i, 1)?;
        let (multiply, add) = if double {
            (Mulpd, Addsd)
        } else {
            (Mulps, Addss)
        };
        let products = self.float_step(multiply, selected(a, 0x10), selected(b, 0x10))?;
        let element = |k: usize| lanes::element(products, size, k);
        let sum = if double {
            self.float_step(add, element(0), element(1))?
        } else {
            let pairs = self.float_step(
                Addps,
                element(0) | (element(2) << 32),
                element(1) | (element(3) << 32),
            )?;
            self.float_step(add, pairs, pairs >> 32)?
        };
        let total = lanes::element(sum, size, 0);
        let spread = (0..count).fold(0, |x, k| lanes::with_element(x, size, k, total));
        self.set_xmm(i.op0_register(), selected(spread, 1));
        Ok(())
    }

    /// The conversions between MMX registers (or 64-bit memory) and packed floats, computed
    /// as their XMM counterparts on the low elements (the zero elements above convert to zero
    /// and raise nothing).
    fn mmx_conversion(&mut self, i: &Instruction) -> Result<(), Exception> {
        use Mnemonic::*;
        let m = i.mnemonic();
        let src = self.vector_operand(i, 1)?;
        let (counterpart, source) = match m {
            Cvtpi2ps => (Cvtdq2ps, src & LOW),
            Cvtps2pi => (Cvtps2dq, src & LOW),
            Cvttps2pi => (Cvttps2dq, src & LOW),
            Cvtpi2pd => (Cvtdq2pd, src & LOW),
            Cvtpd2pi => (Cvtpd2dq, src),
            _ => (Cvttpd2dq, src),
        };
        let op = simd::float_op(counterpart).expect("the packed conversions run natively");
        let result = self.simd_float(|control| op(0, source, control))?;
        let value = if m == Cvtpi2ps {
            (self.xmm(i.op0_register()) & !LOW) | (result & LOW)
        } else {
            result
        };
        self.set_vector_operand(i, 0, value)
    }

    /// PCMPESTRI, PCMPESTRM, PCMPISTRI and PCMPISTRM: the index to ECX or the mask to XMM0,
    /// and the flags.
    fn string_compare(&mut self, i: &Instruction) -> Result<(), Exception> {
        use Mnemonic::*;
        let m = i.mnemonic();
        let table = simd::string_compare(m).expect("the SSE4.2 string comparisons");
        let a = self.xmm(i.op0_register());
        let b = self.vector_operand(i, 1)?;
        let (la, lb) = match m {
            Pcmpestri | Pcmpestrm => (
                self.reg(Register::EAX) as u32,
                self.reg(Register::EDX) as u32,
            ),
            Pcmpestri64 | Pcmpestrm64 => (
                saturated_length(self.reg(Register::RAX)),
                saturated_length(self.reg(Register::RDX)),
            ),
            _ => (0, 0),
        };
        let (result, flags) = simd::at(table, i.immediate8())(a, b, la, lb);
        if matches!(m, Pcmpestri | Pcmpestri64 | Pcmpistri) {
            self.set_reg(Register::ECX, result as u64);
        } else {
            self.fpu.state.xmm[0] = result;
        }
        self.set_compare_flags(flags);
        Ok(())
    }

    /// MASKMOVQ and MASKMOVDQU: the bytes of the first register whose byte in the second has
    /// its top bit set, stored at DS:rDI. The whole operand is checked for faults first, even
    /// where the mask stores nothing.
    fn masked_move(&mut self, i: &Instruction) -> Result<(), Exception> {
        let data = self.vector_operand(i, 1)?;
        let selector = self.vector_operand(i, 2)?;
        let width = if i.mnemonic() == Mnemonic::Maskmovq {
            8
        } else {
            16
        };
        let (di, address_size) = match i.op0_kind() {
            OpKind::MemorySegDI => (Register::DI, 2),
            OpKind::MemorySegEDI => (Register::EDI, 4),
            _ => (Register::RDI, 8),
        };
        let seg = Self::memory_segment(i);
        let base = self.reg(di);
        self.resolve(seg, base, width, true)?;
        for k in 0..width {
            if lanes::element(selector, 1, k) & 0x80 != 0 {
                let address = base.wrapping_add(k as u64) & size_mask(address_size);
                self.write_mem(seg, address, 1, lanes::element(data, 1, k) as u64)?;
            }
        }
        Ok(())
    }
}

/// How many elements of `size` bytes operand `n` of `i` (an XMM or MMX register) holds.
fn lane_count(i: &Instruction, n: u32, size: usize) -> usize {
    if register_operand(i, n, Register::is_mm) {
        8 / size
    } else {
        16 / size
    }
}

/// The element size of PEXTRx, PINSRx and EXTRACTPS.
fn element_size(m: Mnemonic) -> usize {
    match m {
        Mnemonic::Pextrb | Mnemonic::Pinsrb => 1,
        Mnemonic::Pextrw | Mnemonic::Pinsrw => 2,
        Mnemonic::Pextrq | Mnemonic::Pinsrq => 8,
        _ => 4,
    }
}

#[cfg(test)]
pub(super) mod tests;
