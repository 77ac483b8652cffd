//! Results and exact RFLAGS of the integer instructions: pure functions of their operands and
//! the incoming flags, shared by the interpreter and used as the JIT's reference.
//!
//! # Two ways to the same answer
//!
//! The host is an x86-64 CPU, so every instruction that every x86-64 CPU has (ADD to CMP,
//! INC/DEC/NEG, the shifts and rotates, SHLD/SHRD, MUL/IMUL/DIV/IDIV, BT*, BSF/BSR, 16-bit
//! BSWAP) is computed by executing that very instruction on the host, at the guest's operand
//! size, with the guest's arithmetic flags loaded into the host's RFLAGS first and the host's
//! flags read back afterwards (module `native`). That gives what the real CPU gives, including
//! the flags the SDM leaves undefined, which is what the differential tests against KVM on the
//! same CPU compare.
//!
//! Loading the guest's flags first is also what makes partial flag updates right without a
//! table of which instruction writes which flag: INC and DEC leave CF alone, a shift or rotate
//! by zero changes nothing, a rotate writes only CF and OF, BT writes only CF, and some
//! processors leave the flags MUL and DIV do not define as they were; whatever the host leaves
//! untouched is still the guest's value when it is read back. Every function then merges the
//! same way: `new = (rflags & !ARITH_FLAGS) | (host & ARITH_FLAGS)`; bits outside
//! [`ARITH_FLAGS`] (TF, IF, DF, IOPL, ...) are never taken from the host nor given to it.
//!
//! What the host may lack (LZCNT, TZCNT, POPCNT, MOVBE) or cannot run in 64-bit mode (the BCD
//! adjustments) is written out in Rust from the SDM (modules `bits` and `bcd`); the BCD
//! adjustments do the addition or subtraction they amount to with [`binary`].
//!
//! # Cost
//!
//! A native operation is the instruction itself between `add o, o; sahf` and `lahf; seto o`
//! (which load and read back the six flags), plus a few shifts and masks: about twenty simple
//! host instructions, with no branch, loop, memory access or allocation; about 2 ns per
//! operation on an AMD EPYC host, where `push; popfq` and `pushfq; pop` cost 5 to 7 ns.
//! Every function is `#[inline]`, so a caller that knows the operation and size at compile
//! time keeps only the one path it uses.
//!
//! # Host requirement
//!
//! LAHF and SAHF in 64-bit mode (CPUID.80000001H:ECX bit 0), which every x86-64 processor since
//! 2005 has (it is part of the x86-64-v2 baseline); [`host_supported`] says whether this one
//! does.

mod bcd;
mod bits;
mod muldiv;
mod native;

#[cfg(test)]
mod tests;

pub use bcd::{aaa, aad, aam, aas, daa, das};
pub use bits::{BitTestOp, bit_test, bsf, bsr, bswap, lzcnt, movbe, popcnt, tzcnt};
pub use muldiv::{Wide, div, idiv, imul, imul_wide, mul};
pub use native::{BinaryOp, ShiftOp, UnaryOp, binary, shift, shld, shrd, unary};

/// RFLAGS.CF: carry (unsigned overflow, or the last bit shifted out).
pub const CF: u64 = 1 << 0;
/// RFLAGS.PF: the low byte of the result has an even number of set bits.
pub const PF: u64 = 1 << 2;
/// RFLAGS.AF: carry or borrow out of bit 3 (for BCD arithmetic).
pub const AF: u64 = 1 << 4;
/// RFLAGS.ZF: the result is zero.
pub const ZF: u64 = 1 << 6;
/// RFLAGS.SF: the result's most significant bit.
pub const SF: u64 = 1 << 7;
/// RFLAGS.OF: signed overflow.
pub const OF: u64 = 1 << 11;
/// The six status flags the arithmetic instructions write; no function here changes any other
/// bit of RFLAGS.
pub const ARITH_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;

/// An instruction's operand size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpSize {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Word,
    /// 32 bits.
    Dword,
    /// 64 bits.
    Qword,
}

impl OpSize {
    /// The size in bytes: 1, 2, 4 or 8.
    #[inline]
    pub const fn bytes(self) -> u32 {
        match self {
            OpSize::Byte => 1,
            OpSize::Word => 2,
            OpSize::Dword => 4,
            OpSize::Qword => 8,
        }
    }

    /// The size in bits: 8, 16, 32 or 64.
    #[inline]
    pub const fn bits(self) -> u32 {
        self.bytes() * 8
    }

    /// All bits of an operand of this size set.
    #[inline]
    pub const fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits())
    }

    /// The most significant bit of an operand of this size.
    #[inline]
    pub const fn sign_bit(self) -> u64 {
        1 << (self.bits() - 1)
    }

    /// The size of `n` bytes, if `n` is 1, 2, 4 or 8.
    #[inline]
    pub const fn from_bytes(n: u32) -> Option<OpSize> {
        match n {
            1 => Some(OpSize::Byte),
            2 => Some(OpSize::Word),
            4 => Some(OpSize::Dword),
            8 => Some(OpSize::Qword),
            _ => None,
        }
    }
}

/// The instruction raises a divide error (#DE): a zero divisor, a quotient too wide for its
/// destination, or AAM with a zero immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("divide error (#DE)")]
pub struct DivideError;

/// Whether condition `cc` holds under `rflags`, for Jcc, SETcc and CMOVcc.
///
/// `cc` is the condition's encoding, the low four bits of the opcode (`0x70 + cc`,
/// `0x0f 0x80 + cc`, ...); higher bits are ignored. Conditions come in pairs whose odd member is
/// the negation of the even one (O/NO, B/AE, E/NE, BE/A, S/NS, P/NP, L/GE, LE/G).
#[inline]
pub fn condition(cc: u8, rflags: u64) -> bool {
    let set = |flag: u64| rflags & flag != 0;
    let holds = match (cc >> 1) & 7 {
        0 => set(OF),
        1 => set(CF),
        2 => set(ZF),
        3 => set(CF) || set(ZF),
        4 => set(SF),
        5 => set(PF),
        6 => set(SF) != set(OF),
        _ => set(ZF) || set(SF) != set(OF),
    };
    holds != (cc & 1 != 0)
}

/// Whether the host can run this module: it executes LAHF and SAHF in 64-bit mode
/// (CPUID.80000001H:ECX bit 0). A machine should check once, before its first vCPU runs.
pub fn host_supported() -> bool {
    const LAHF_SAHF: u32 = 1;
    core::arch::x86_64::__cpuid(0x8000_0001).ecx & LAHF_SAHF != 0
}

/// `rflags` with its arithmetic flags replaced by those of `computed`.
#[inline]
fn merge_arith(rflags: u64, computed: u64) -> u64 {
    (rflags & !ARITH_FLAGS) | (computed & ARITH_FLAGS)
}

/// SF, ZF and PF of a result of `size`, as every arithmetic and logical instruction sets them.
#[inline]
fn sign_zero_parity(size: OpSize, result: u64) -> u64 {
    let result = result & size.mask();
    let mut flags = 0;
    if result & size.sign_bit() != 0 {
        flags |= SF;
    }
    if result == 0 {
        flags |= ZF;
    }
    if (result as u8).count_ones().is_multiple_of(2) {
        flags |= PF;
    }
    flags
}
