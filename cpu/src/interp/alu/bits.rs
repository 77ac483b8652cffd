//! Single-bit and bit-counting instructions: BT/BTS/BTR/BTC and BSF/BSR run on the host; TZCNT,
//! LZCNT and POPCNT (which the host may lack) and the byte swaps are plain Rust.

use super::native::{sized, with_guest_flags};
use super::{AF, CF, OF, OpSize, PF, SF, ZF, merge_arith};

/// The bit-test instructions (0F A3/AB/B3/BB and group 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BitTestOp {
    /// BT: copy the bit to CF.
    Bt,
    /// BTS: copy the bit to CF, then set it.
    Bts,
    /// BTR: copy the bit to CF, then clear it.
    Btr,
    /// BTC: copy the bit to CF, then complement it.
    Btc,
}

/// Bit `bit` of `value` tested (and set, cleared or complemented) at `size`: the new value
/// (masked to `size`; `value` itself for [`BitTestOp::Bt`]) and the new RFLAGS (CF = the bit
/// before; OF, SF, AF and PF are undefined in the SDM and ZF is kept: the host's values).
///
/// `bit` is taken modulo the operand width, as the register forms do. For a memory operand
/// with a register bit offset, the caller first moves the address by the offset's signed
/// quotient by the width (in units of `size`), loads that operand, and passes the offset
/// as it is (or reduced).
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: the bit tests have no 8-bit form.
#[inline]
pub fn bit_test(op: BitTestOp, size: OpSize, value: u64, bit: u64, rflags: u64) -> (u64, u64) {
    let mut result = value;
    let mut flags = rflags;
    macro_rules! run {
        ($mnemonic:literal) => {{
            macro_rules! form {
                ($w:literal) => {
                    concat!($mnemonic, " {d", $w, "}, {s", $w, "}")
                };
            }
            sized!(wide $mnemonic, size, form, flags, d = inout(reg) result, s = in(reg) bit)
        }};
    }
    match op {
        BitTestOp::Bt => run!("bt"),
        BitTestOp::Bts => run!("bts"),
        BitTestOp::Btr => run!("btr"),
        BitTestOp::Btc => run!("btc"),
    }
    (result & size.mask(), merge_arith(rflags, flags))
}

/// Runs `$mnemonic` (BSF or BSR) on the whole destination register `$dst_old`.
macro_rules! bit_scan {
    ($mnemonic:literal, $size:expr, $src:expr, $dst_old:expr, $rflags:expr) => {{
        let mut register = $dst_old;
        let mut flags = $rflags;
        macro_rules! form {
            ($w:literal) => {
                concat!($mnemonic, " {d", $w, "}, {s", $w, "}")
            };
        }
        sized!(wide $mnemonic, $size, form, flags, d = inout(reg) register, s = in(reg) $src);
        (register, merge_arith($rflags, flags))
    }};
}

/// BSF: the index of the lowest set bit of `src` at `size`, and the new RFLAGS (ZF = `src` is
/// zero; the other arithmetic flags are undefined in the SDM: the host's values).
///
/// `dst_old` is the whole 64-bit destination register before the instruction and the value
/// returned is the whole register after it, to be stored as it is. A 16-bit BSF writes only the
/// low 16 bits, and for a zero source the SDM leaves the destination undefined: AMD documents
/// it unchanged, Intel's processors keep it but a 32-bit form clears its upper half; the host
/// decides, so the guest sees what the real CPU does.
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: BSF has no 8-bit form.
#[inline]
pub fn bsf(size: OpSize, src: u64, dst_old: u64, rflags: u64) -> (u64, u64) {
    bit_scan!("bsf", size, src, dst_old, rflags)
}

/// BSR: the index of the highest set bit of `src` at `size`, and the new RFLAGS; the
/// destination register and the flags behave as for [`bsf`].
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: BSR has no 8-bit form.
#[inline]
pub fn bsr(size: OpSize, src: u64, dst_old: u64, rflags: u64) -> (u64, u64) {
    bit_scan!("bsr", size, src, dst_old, rflags)
}

/// The flags TZCNT, LZCNT and POPCNT write: CF and ZF as given, and of OF, SF, AF and PF those
/// in `kept` from `rflags`, the rest cleared. The SDM clears them for POPCNT and leaves them
/// undefined for TZCNT and LZCNT, where processors differ (AMD Zen keeps OF and clears the
/// rest; QEMU clears all four), so for those two the interpreter does what the host does: it
/// is the reference the interpreter is checked against.
#[inline]
fn count_flags(rflags: u64, kept: u64, carry: bool, zero: bool) -> u64 {
    let carry = if carry { CF } else { 0 };
    let zero = if zero { ZF } else { 0 };
    merge_arith(rflags, (rflags & kept) | carry | zero)
}

/// Which of OF, SF, AF and PF the host's TZCNT (`tzcnt` true) or LZCNT keeps, measured once
/// by running it with all four set; none if the host lacks the instruction.
fn host_kept_flags(tzcnt: bool) -> u64 {
    static TZCNT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static LZCNT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let (cell, feature) = if tzcnt {
        (&TZCNT, std::arch::is_x86_feature_detected!("bmi1"))
    } else {
        (&LZCNT, std::arch::is_x86_feature_detected!("lzcnt"))
    };
    *cell.get_or_init(|| {
        if !feature {
            return 0;
        }
        let undefined = OF | SF | AF | PF;
        let mut flags: u64 = 0x2 | undefined;
        let source: u64 = 0x10;
        // SAFETY: the host has the instruction (checked above); the block loads RFLAGS from a
        // register pushed on the stack, runs it, and reads RFLAGS back, balancing the stack,
        // and sets no flag outside the arithmetic ones (the value loaded has only those and
        // the always-one bit 1).
        unsafe {
            if tzcnt {
                core::arch::asm!("push {f}", "popfq", "tzcnt {r}, {s}", "pushfq", "pop {f}",
                    f = inout(reg) flags, r = out(reg) _, s = in(reg) source);
            } else {
                core::arch::asm!("push {f}", "popfq", "lzcnt {r}, {s}", "pushfq", "pop {f}",
                    f = inout(reg) flags, r = out(reg) _, s = in(reg) source);
            }
        }
        flags & undefined
    })
}

/// TZCNT: the number of trailing zero bits of `src` at `size` (the width for zero), and the
/// new RFLAGS: CF = `src` is zero, ZF = the count is zero.
#[inline]
pub fn tzcnt(size: OpSize, src: u64, rflags: u64) -> (u64, u64) {
    let src = src & size.mask();
    let count = src.trailing_zeros().min(size.bits());
    let kept = host_kept_flags(true);
    (
        u64::from(count),
        count_flags(rflags, kept, src == 0, count == 0),
    )
}

/// LZCNT: the number of leading zero bits of `src` at `size` (the width for zero), and the new
/// RFLAGS: CF = `src` is zero, ZF = the count is zero.
#[inline]
pub fn lzcnt(size: OpSize, src: u64, rflags: u64) -> (u64, u64) {
    let src = src & size.mask();
    let count = src.leading_zeros() - (64 - size.bits());
    let kept = host_kept_flags(false);
    (
        u64::from(count),
        count_flags(rflags, kept, src == 0, count == 0),
    )
}

/// POPCNT: the number of set bits of `src` at `size`, and the new RFLAGS: ZF = `src` is zero,
/// the other arithmetic flags cleared.
#[inline]
pub fn popcnt(size: OpSize, src: u64, rflags: u64) -> (u64, u64) {
    let src = src & size.mask();
    (
        u64::from(src.count_ones()),
        count_flags(rflags, 0, false, src == 0),
    )
}

/// MOVBE's byte swap: the bytes of `value` at `size` in reverse order. No flags change.
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: MOVBE has no 8-bit form.
#[inline]
pub fn movbe(size: OpSize, value: u64) -> u64 {
    match size {
        OpSize::Byte => panic!("MOVBE has no 8-bit form"),
        OpSize::Word => u64::from((value as u16).swap_bytes()),
        OpSize::Dword => u64::from((value as u32).swap_bytes()),
        OpSize::Qword => value.swap_bytes(),
    }
}

/// BSWAP: the bytes of `value` at `size` (32 or 64 bits) in reverse order. No flags change.
///
/// With a 16-bit operand the SDM leaves the result undefined; the host runs it, so the guest
/// gets what the real CPU gives (zero on the processors we know of), masked to 16 bits.
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: BSWAP has no 8-bit form.
#[inline]
pub fn bswap(size: OpSize, value: u64) -> u64 {
    match size {
        OpSize::Word => {
            let mut register = value;
            // SAFETY: BSWAP AX (66 0F C8, spelled as bytes because assemblers refuse the
            // 16-bit form) only rewrites AX, which is an operand; it accesses no memory, uses
            // no stack and writes no flags.
            unsafe {
                ::core::arch::asm!(
                    ".byte 0x66, 0x0f, 0xc8",
                    inout("rax") register,
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            register & 0xffff
        }
        size => movbe(size, value),
    }
}
