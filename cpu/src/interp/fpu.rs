//! The x87 FPU, MMX and SSE state, kept in the layout FXSAVE64 stores it in.
//!
//! # The state
//!
//! [`FxState`] is the 512-byte FXSAVE64 image: FCW, FSW, the abridged tag word, the last
//! instruction's opcode and pointers, MXCSR, the eight x87 registers in stack order (ST0 first;
//! the MMX registers alias their low 64 bits), and XMM0-XMM15. Keeping the state in exactly the
//! hardware's layout is what lets the host run x87 instructions on it directly (module `x87`),
//! and makes the guest's FXSAVE and FXRSTOR little more than copies.
//!
//! The processor also keeps the selectors of the last instruction and data pointers (FCS and
//! FDS), which only the 32-bit FXSAVE format and FNSTENV/FNSAVE store; `Fpu` holds them
//! beside the image.
//!
//! # Running on the host
//!
//! Like the integer ALU, the floating-point instructions are computed by the host's own
//! instructions with the guest's state loaded, so that results, rounding, NaN propagation,
//! denormal handling and exception flags are exactly what the processor gives: SSE
//! operations in module `simd` (the guest's MXCSR loaded around the one instruction), x87
//! instructions in module `x87` (the whole guest image loaded with FXRSTOR64 and stored back
//! with FXSAVE64). Neither ever lets the host take a floating-point exception: SSE runs with
//! every exception masked and the interpreter decides from the flags raised what the guest's
//! masks make of them; x87 exceptions are only reported by the next waiting instruction, which
//! the interpreter checks for itself before it runs one.

pub(crate) mod simd;
pub(crate) mod x87;

use std::sync::OnceLock;

use super::Interpreter;

/// MXCSR after reset: every exception masked, round to nearest, no flags raised.
pub const MXCSR_RESET: u32 = 0x1f80;

/// The MXCSR bits the guest may set (FXSAVE's MXCSR_MASK): all of bits 15:0, DAZ included.
/// LDMXCSR and FXRSTOR raise #GP(0) for any other.
pub const MXCSR_MASK: u32 = 0xffff;

/// FCW after reset (SDM Vol. 3A, Table 10-1).
pub const FCW_RESET: u16 = 0x0040;

/// FCW after FNINIT: every exception masked, 64-bit precision, round to nearest.
pub const FCW_INIT: u16 = 0x037f;

/// Bits of the x87 status word.
pub(crate) mod fsw {
    /// The six exception flags (IE, DE, ZE, OE, UE, PE).
    pub const EXCEPTIONS: u16 = 0x3f;
    /// Stack fault.
    pub const SF: u16 = 1 << 6;
    /// Error summary: an unmasked exception is pending.
    pub const ES: u16 = 1 << 7;
    /// The top-of-stack field.
    pub const TOP: u16 = 7 << 11;
    /// The busy bit, which mirrors ES.
    pub const B: u16 = 1 << 15;
    /// The exceptions that, unmasked, keep a store from writing memory: all but PE.
    pub const REFUSE_STORE: u16 = 0x1f;
}

/// Bits of MXCSR.
pub(crate) mod mxcsr {
    /// The six exception flags (IE, DE, ZE, OE, UE, PE).
    pub const FLAGS: u32 = 0x3f;
    /// Invalid operation.
    pub const IE: u32 = 1 << 0;
    /// Denormal operand.
    pub const DE: u32 = 1 << 1;
    /// Divide by zero.
    pub const ZE: u32 = 1 << 2;
    /// Underflow.
    pub const UE: u32 = 1 << 4;
    /// The exceptions detected before an operation computes (SDM Vol. 1, 11.5.1): when one of
    /// them is unmasked, the post-computation exceptions are not even looked for.
    pub const PRE_COMPUTATION: u32 = IE | DE | ZE;
    /// The six exception masks, each its flag shifted left by 7.
    pub const MASKS: u32 = 0x3f << 7;
    /// Flush to zero.
    pub const FTZ: u32 = 1 << 15;
}

/// Why a state cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FpuError {
    /// MXCSR sets a bit outside [`MXCSR_MASK`].
    #[error("MXCSR {0:#x} sets reserved bits")]
    ReservedMxcsr(u32),
}

/// The x87, MMX and SSE state in the layout FXSAVE64 stores (SDM Vol. 1, Table 10-2): 512
/// bytes, 16-byte aligned.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FxState {
    /// The x87 control word.
    pub fcw: u16,
    /// The x87 status word, TOP included.
    pub fsw: u16,
    /// The abridged tag word: bit `i` is set when physical register `i` is not empty.
    pub ftw: u8,
    reserved: u8,
    /// The last x87 instruction's opcode: bits 10:0 of its opcode byte and ModR/M byte.
    pub fop: u16,
    /// The last x87 instruction's address (its offset in its code segment).
    pub fip: u64,
    /// The last x87 memory operand's offset.
    pub fdp: u64,
    /// MXCSR.
    pub mxcsr: u32,
    /// The MXCSR bits the processor supports.
    pub mxcsr_mask: u32,
    /// ST0-ST7 (MM0-MM7 after an MMX instruction): an 80-bit value in bits 79:0.
    pub st: [u128; 8],
    /// XMM0-XMM15.
    pub xmm: [u128; 16],
    available: [u8; 96],
}

const _: () = assert!(size_of::<FxState>() == 512);
const _: () = assert!(std::mem::offset_of!(FxState, mxcsr) == 24);
const _: () = assert!(std::mem::offset_of!(FxState, st) == 32);
const _: () = assert!(std::mem::offset_of!(FxState, xmm) == 160);

impl Default for FxState {
    /// The state after RESET (SDM Vol. 3A, Table 10-1): FCW 0040H, every register +0.0 and
    /// tagged valid (tag word 5555H), MXCSR 1F80H, XMM registers zero.
    fn default() -> FxState {
        FxState {
            fcw: FCW_RESET,
            fsw: 0,
            ftw: 0xff,
            reserved: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            mxcsr: MXCSR_RESET,
            mxcsr_mask: MXCSR_MASK,
            st: [0; 8],
            xmm: [0; 16],
            available: [0; 96],
        }
    }
}

impl FxState {
    /// The register stack's top: the physical register ST0 is.
    pub fn top(&self) -> usize {
        usize::from((self.fsw & fsw::TOP) >> 11)
    }

    /// The slot of [`FxState::st`] that holds physical register `physical`.
    fn slot(&self, physical: usize) -> usize {
        (physical + 8 - self.top()) & 7
    }

    /// The full tag word FNSTENV and FNSAVE store: two bits per physical register, 00 valid,
    /// 01 zero, 10 special (NaN, infinity, denormal or an unsupported format), 11 empty.
    pub fn full_tag_word(&self) -> u16 {
        (0..8).fold(0, |word, physical| {
            let tag = if self.ftw & (1 << physical) == 0 {
                3
            } else {
                let value = self.st[self.slot(physical)];
                let exponent = (value >> 64) as u16 & 0x7fff;
                let mantissa = value as u64;
                match exponent {
                    0 if mantissa == 0 => 1,
                    0 | 0x7fff => 2,
                    _ if mantissa >> 63 == 0 => 2,
                    _ => 0,
                }
            };
            word | (tag << (2 * physical))
        })
    }

    /// Recomputes ES and B from the exception flags and masks, as the processor does whenever
    /// either changes (FLDCW, FLDENV, FRSTOR, FXRSTOR and every x87 instruction).
    pub(crate) fn update_error_summary(&mut self) {
        if self.fsw & !self.fcw & fsw::EXCEPTIONS != 0 {
            self.fsw |= fsw::ES | fsw::B;
        } else {
            self.fsw &= !(fsw::ES | fsw::B);
        }
    }

    /// Sets the abridged tag word from a full one: only empty and not empty count.
    pub fn set_full_tag_word(&mut self, word: u16) {
        self.ftw = (0..8)
            .filter(|physical| (word >> (2 * physical)) & 3 != 3)
            .fold(0, |ftw, physical| ftw | (1 << physical));
    }
}

/// A vCPU's floating-point unit: the FXSAVE image and the pointer selectors beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fpu {
    /// The state. Its pointer fields are the processor's internal registers, always up to date,
    /// whatever the host's FXSAVE would show of them.
    pub(crate) state: FxState,
    /// The code selector of the last x87 instruction.
    pub(crate) fcs: u16,
    /// The data selector of the last x87 memory operand.
    pub(crate) fds: u16,
}

impl Fpu {
    /// FNINIT: the x87 part to its initial state; MXCSR and the XMM registers are untouched.
    pub(crate) fn init(&mut self) {
        let s = &mut self.state;
        s.fcw = FCW_INIT;
        s.fsw = 0;
        s.ftw = 0;
        s.fop = 0;
        s.fip = 0;
        s.fdp = 0;
        self.fcs = 0;
        self.fds = 0;
    }

    /// An unmasked x87 exception waits for the next waiting instruction.
    pub(crate) fn x87_pending(&self) -> bool {
        self.state.fsw & fsw::ES != 0
    }

    /// MMX register `index`: the low 64 bits of physical register `index`.
    pub(crate) fn mm(&self, index: usize) -> u64 {
        self.state.st[self.state.slot(index)] as u64
    }

    /// Writes MMX register `index`; its exponent bits (79:64) become all ones.
    pub(crate) fn set_mm(&mut self, index: usize, value: u64) {
        let slot = self.state.slot(index);
        self.state.st[slot] = (0xffff << 64) | u128::from(value);
    }

    /// What every MMX instruction but EMMS does to the x87 state: TOP becomes 0 and every
    /// register is tagged valid.
    pub(crate) fn enter_mmx(&mut self) {
        let top = self.state.top();
        self.state.st.rotate_right(top);
        self.state.fsw &= !fsw::TOP;
        self.state.ftw = 0xff;
    }
}

/// Reads the little-endian `N`-byte field at `at` of `bytes`.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes[at..at + N]
        .try_into()
        .expect("the field lies inside the image")
}

/// The control word FLDCW, FLDENV, FRSTOR and FXRSTOR load from `value`: bits 7 and 13-15
/// read as zero and bit 6 as one, as the processor keeps them.
pub(crate) fn control_word(value: u16) -> u16 {
    (value & 0x1f3f) | 0x0040
}

/// How FNSTENV, FLDENV, FNSAVE and FRSTOR lay the x87 environment out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EnvironmentLayout {
    /// 28 bytes, for a 32-bit operand size, rather than 14.
    pub(crate) wide: bool,
    /// The layout of real and virtual-8086 mode: 20- or 32-bit linear pointers, no selectors,
    /// FOP beside the instruction pointer.
    pub(crate) real: bool,
}

impl EnvironmentLayout {
    /// The environment's size in bytes.
    pub(crate) fn len(self) -> usize {
        if self.wide { 28 } else { 14 }
    }
}

/// The reserved upper half of a 32-bit environment field, which FNSTENV fills with ones.
const RESERVED_HIGH: u32 = 0xffff_0000;

impl Fpu {
    /// The environment FNSTENV stores (its first `layout.len()` bytes).
    pub(crate) fn store_environment(&self, layout: EnvironmentLayout) -> [u8; 28] {
        let s = &self.state;
        let (fcw, fsw, tag) = (
            u32::from(s.fcw),
            u32::from(s.fsw),
            u32::from(s.full_tag_word()),
        );
        let fop = u32::from(s.fop & 0x7ff);
        let (ip, dp) = if layout.real {
            let linear =
                |selector: u16, offset: u64| (u64::from(selector) << 4).wrapping_add(offset) as u32;
            (linear(self.fcs, s.fip), linear(self.fds, s.fdp))
        } else {
            (s.fip as u32, s.fdp as u32)
        };
        let mut out = [0u8; 28];
        if layout.wide {
            let words: [u32; 7] = if layout.real {
                [
                    fcw | RESERVED_HIGH,
                    fsw | RESERVED_HIGH,
                    tag | RESERVED_HIGH,
                    (ip & 0xffff) | RESERVED_HIGH,
                    fop | ((ip >> 16) << 12),
                    (dp & 0xffff) | RESERVED_HIGH,
                    (dp >> 16) << 12,
                ]
            } else {
                [
                    fcw | RESERVED_HIGH,
                    fsw | RESERVED_HIGH,
                    tag | RESERVED_HIGH,
                    ip,
                    u32::from(self.fcs) | (fop << 16),
                    dp,
                    u32::from(self.fds) | RESERVED_HIGH,
                ]
            };
            for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
        } else {
            let high_nibble = |pointer: u32| (((pointer >> 16) & 0xf) << 12) as u16;
            let words: [u16; 7] = if layout.real {
                [
                    fcw as u16,
                    fsw as u16,
                    tag as u16,
                    ip as u16,
                    high_nibble(ip) | fop as u16,
                    dp as u16,
                    high_nibble(dp),
                ]
            } else {
                [
                    fcw as u16, fsw as u16, tag as u16, ip as u16, self.fcs, dp as u16, self.fds,
                ]
            };
            for (chunk, word) in out.chunks_exact_mut(2).zip(words) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
        }
        out
    }

    /// Loads the environment FLDENV reads from `bytes` (`layout.len()` of them).
    pub(crate) fn load_environment(&mut self, bytes: &[u8], layout: EnvironmentLayout) {
        let word = |k: usize| {
            if layout.wide {
                u32::from_le_bytes(field(bytes, 4 * k))
            } else {
                u32::from(u16::from_le_bytes(field(bytes, 2 * k)))
            }
        };
        let s = &mut self.state;
        s.fcw = control_word(word(0) as u16);
        s.fsw = word(1) as u16;
        s.set_full_tag_word(word(2) as u16);
        if layout.real {
            let high_bits = if layout.wide { 0xffff } else { 0xf };
            let pointer = |low: u32, high: u32| (low & 0xffff) | (((high >> 12) & high_bits) << 16);
            s.fip = pointer(word(3), word(4)).into();
            s.fdp = pointer(word(5), word(6)).into();
            s.fop = (word(4) & 0x7ff) as u16;
            self.fcs = 0;
            self.fds = 0;
        } else {
            s.fip = word(3).into();
            self.fcs = word(4) as u16;
            if layout.wide {
                s.fop = ((word(4) >> 16) & 0x7ff) as u16;
            }
            s.fdp = word(5).into();
            self.fds = word(6) as u16;
        }
        s.update_error_summary();
    }

    /// ST0-ST7 as FNSAVE stores them after the environment: ten bytes each.
    pub(crate) fn store_registers(&self) -> [u8; 80] {
        let mut out = [0u8; 80];
        for (chunk, value) in out.chunks_exact_mut(10).zip(self.state.st) {
            chunk.copy_from_slice(&value.to_le_bytes()[..10]);
        }
        out
    }

    /// Loads ST0-ST7 as FRSTOR reads them after the environment.
    pub(crate) fn load_registers(&mut self, bytes: &[u8]) {
        for (slot, chunk) in self.state.st.iter_mut().zip(bytes.chunks_exact(10)) {
            let mut value = [0u8; 16];
            value[..10].copy_from_slice(chunk);
            *slot = u128::from_le_bytes(value);
        }
    }

    /// The image FXSAVE stores, all 512 bytes of it (the caller writes the part the processor
    /// writes). `wide` (FXSAVE64) stores 64-bit instruction and data pointers, else 32-bit
    /// ones each followed by its selector. Without `pointers`, FOP and the pointers are
    /// stored as zeros (see [`host_fxsave_stores_pointers`]).
    pub(crate) fn fxsave_image(&self, wide: bool, pointers: bool) -> [u8; 512] {
        let s = &self.state;
        let mut image = [0u8; 512];
        image[0..2].copy_from_slice(&s.fcw.to_le_bytes());
        image[2..4].copy_from_slice(&s.fsw.to_le_bytes());
        image[4] = s.ftw;
        if pointers {
            image[6..8].copy_from_slice(&s.fop.to_le_bytes());
            if wide {
                image[8..16].copy_from_slice(&s.fip.to_le_bytes());
                image[16..24].copy_from_slice(&s.fdp.to_le_bytes());
            } else {
                image[8..12].copy_from_slice(&(s.fip as u32).to_le_bytes());
                image[12..14].copy_from_slice(&self.fcs.to_le_bytes());
                image[16..20].copy_from_slice(&(s.fdp as u32).to_le_bytes());
                image[20..22].copy_from_slice(&self.fds.to_le_bytes());
            }
        }
        image[24..28].copy_from_slice(&s.mxcsr.to_le_bytes());
        image[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        let registers = s.st.iter().chain(&s.xmm);
        for (chunk, value) in image[32..416].chunks_exact_mut(16).zip(registers) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        image
    }

    /// Loads the image FXRSTOR reads, as [`Fpu::fxsave_image`] lays it out. `sse` is the
    /// number of XMM registers to load along with MXCSR, or `None` to leave both alone (CR4.
    /// OSFXSR clear). Every field takes the form the processor's FXRSTOR gives it.
    pub(crate) fn load_fxsave_image(
        &mut self,
        image: &[u8; 512],
        wide: bool,
        sse: Option<usize>,
    ) -> Result<(), FpuError> {
        let mut s = self.state;
        if let Some(count) = sse {
            let value = u32::from_le_bytes(field(image, 24));
            if value & !MXCSR_MASK != 0 {
                return Err(FpuError::ReservedMxcsr(value));
            }
            s.mxcsr = value;
            for (k, xmm) in s.xmm.iter_mut().take(count).enumerate() {
                *xmm = u128::from_le_bytes(field(image, 160 + 16 * k));
            }
        }
        s.fcw = u16::from_le_bytes(field(image, 0));
        s.fsw = u16::from_le_bytes(field(image, 2));
        s.ftw = image[4];
        for (k, st) in s.st.iter_mut().enumerate() {
            *st = u128::from_le_bytes(field(image, 32 + 16 * k));
        }
        let fop = u16::from_le_bytes(field(image, 6)) & 0x7ff;
        let (fip, fcs, fdp, fds) = if wide {
            let fip = u64::from_le_bytes(field(image, 8));
            (
                fip,
                self.fcs,
                u64::from_le_bytes(field(image, 16)),
                self.fds,
            )
        } else {
            (
                u32::from_le_bytes(field(image, 8)).into(),
                u16::from_le_bytes(field(image, 12)),
                u32::from_le_bytes(field(image, 16)).into(),
                u16::from_le_bytes(field(image, 20)),
            )
        };
        x87::normalize(&mut s);
        // The pointers are loaded as they are; the host's FXSAVE may not show them.
        s.fop = fop;
        s.fip = fip;
        s.fdp = fdp;
        self.state = s;
        self.fcs = fcs;
        self.fds = fds;
        Ok(())
    }
}

impl Interpreter {
    /// The x87, MMX and SSE state, in FXSAVE64's layout, with the instruction and data
    /// pointers as the processor keeps them.
    pub fn fx_state(&self) -> FxState {
        self.fpu.state
    }

    /// Replaces the x87, MMX and SSE state, as a debugger or a loader does; every field takes
    /// the form the processor's FXRSTOR64 gives it (reserved control-word bits, ES and B
    /// recomputed). The pointer selectors are left alone.
    pub fn set_fx_state(&mut self, state: &FxState) -> Result<(), FpuError> {
        if state.mxcsr & !MXCSR_MASK != 0 {
            return Err(FpuError::ReservedMxcsr(state.mxcsr));
        }
        let mut s = *state;
        x87::normalize(&mut s);
        s.fop = state.fop & 0x7ff;
        s.fip = state.fip;
        s.fdp = state.fdp;
        self.fpu.state = s;
        Ok(())
    }
}

/// Whether the host's FXSAVE stores the x87 instruction and data pointers even when no
/// exception is pending. Intel processors do; AMD processors store zeros instead (the pointers
/// are still kept, and FNSTENV shows them). The guest's FXSAVE follows the host's way, so that
/// the interpreter and KVM on the same host agree.
pub(crate) fn host_fxsave_stores_pointers() -> bool {
    static STORES: OnceLock<bool> = OnceLock::new();
    *STORES.get_or_init(x87::probe_fxsave_pointers)
}

#[cfg(test)]
mod tests;
