//! MUL, IMUL, DIV and IDIV, run on the host; divide errors are found before the host divides.

use super::native::{sized, with_guest_flags};
use super::{DivideError, OpSize, merge_arith};

/// A double-width product: what one-operand MUL and IMUL leave in rDX:rAX.
///
/// For [`OpSize::Byte`] the whole 16-bit product is in `lo` (the new AX) and `hi` is zero;
/// for the other sizes `lo` is the new AX, EAX or RAX and `hi` the new DX, EDX or RDX, each
/// masked to the operand size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wide {
    /// AX for 8-bit operands; otherwise the low half: AX, EAX or RAX.
    pub lo: u64,
    /// Zero for 8-bit operands; otherwise the high half: DX, EDX or RDX.
    pub hi: u64,
}

/// Runs one-operand `$mnemonic` (MUL or IMUL) with AL/AX/EAX/RAX = `a` and source `b`.
macro_rules! widening_multiply {
    ($mnemonic:literal, $size:expr, $a:expr, $b:expr, $rflags:expr) => {{
        let (mut lo, mut hi) = ($a, 0u64);
        let mut flags = $rflags;
        macro_rules! form {
            ($w:literal) => {
                concat!("mov rax, {a}\n", $mnemonic, " {s", $w, "}\nmov {a}, rax")
            };
        }
        sized!($size, form, flags, a = inout(reg) lo, s = in(reg) $b, inout("rdx") hi);
        // The 8-bit forms write AX and leave rDX alone, so `hi` is still zero for them.
        let lo_mask = match $size {
            OpSize::Byte => 0xffff,
            size => size.mask(),
        };
        let product = Wide {
            lo: lo & lo_mask,
            hi: hi & $size.mask(),
        };
        (product, merge_arith($rflags, flags))
    }};
}

/// One-operand MUL: `a` (AL, AX, EAX or RAX) times `b`, unsigned; the double-width product
/// (see [`Wide`]) and the new RFLAGS (CF = OF = the high half is not zero).
#[inline]
pub fn mul(size: OpSize, a: u64, b: u64, rflags: u64) -> (Wide, u64) {
    widening_multiply!("mul", size, a, b, rflags)
}

/// One-operand IMUL: `a` (AL, AX, EAX or RAX) times `b`, signed; the double-width product
/// (see [`Wide`]) and the new RFLAGS (CF = OF = the product does not fit the operand size).
#[inline]
pub fn imul_wide(size: OpSize, a: u64, b: u64, rflags: u64) -> (Wide, u64) {
    widening_multiply!("imul", size, a, b, rflags)
}

/// Two- and three-operand IMUL: `a * b` truncated to `size`, and the new RFLAGS (CF = OF = the
/// truncation lost significant bits).
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: these forms have no 8-bit encoding.
#[inline]
pub fn imul(size: OpSize, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let mut result = a;
    let mut flags = rflags;
    macro_rules! form {
        ($w:literal) => {
            concat!("imul {d", $w, "}, {s", $w, "}")
        };
    }
    sized!(wide "two-operand IMUL", size, form, flags, d = inout(reg) result, s = in(reg) b);
    (result & size.mask(), merge_arith(rflags, flags))
}

/// Runs `$mnemonic` (DIV or IDIV) with rDX:rAX = `$hi`:`$lo` (AX = `$lo` for 8-bit operands)
/// and the divisor `$divisor`, which the caller has checked cannot fault.
macro_rules! divide {
    ($mnemonic:literal, $size:expr, $hi:expr, $lo:expr, $divisor:expr, $rflags:expr) => {{
        let (mut lo, mut hi) = ($lo, $hi);
        let mut flags = $rflags;
        macro_rules! form {
            ($w:literal) => {
                concat!("mov rax, {a}\n", $mnemonic, " {s", $w, "}\nmov {a}, rax")
            };
        }
        sized!($size, form, flags, a = inout(reg) lo, s = in(reg) $divisor, inout("rdx") hi);
        let (quotient, remainder) = match $size {
            // The 8-bit forms leave the quotient in AL and the remainder in AH.
            OpSize::Byte => (lo & 0xff, (lo >> 8) & 0xff),
            size => (lo & size.mask(), hi & size.mask()),
        };
        Ok((quotient, remainder, merge_arith($rflags, flags)))
    }};
}

/// DIV: the unsigned division of the double-width dividend `hi:lo` by `divisor`, at `size`;
/// the quotient, the remainder and the new RFLAGS (every arithmetic flag is undefined in the
/// SDM: the host's values).
///
/// For [`OpSize::Byte`] the dividend is AX = `lo` (`hi` is ignored), the quotient goes to AL
/// and the remainder to AH; for the other sizes the dividend is DX:AX, EDX:EAX or RDX:RAX
/// (`hi:lo`), the quotient goes to rAX and the remainder to rDX. Both returned values are
/// masked to the operand size.
///
/// # Errors
///
/// [`DivideError`] if `divisor` is zero or the quotient does not fit the operand size; nothing
/// is computed then, and the guest's state must not change.
#[inline]
pub fn div(
    size: OpSize,
    hi: u64,
    lo: u64,
    divisor: u64,
    rflags: u64,
) -> Result<(u64, u64, u64), DivideError> {
    let divisor = divisor & size.mask();
    // The quotient fits `size` bits exactly when the dividend's high half is below the
    // divisor; a zero divisor fails the same test.
    let high_half = match size {
        OpSize::Byte => (lo >> 8) & 0xff,
        size => hi & size.mask(),
    };
    if high_half >= divisor {
        return Err(DivideError);
    }
    divide!("div", size, hi, lo, divisor, rflags)
}

/// IDIV: the signed division of the double-width dividend `hi:lo` by `divisor`, at `size`;
/// the quotient (rounded toward zero), the remainder (with the dividend's sign) and the new
/// RFLAGS (all undefined in the SDM: the host's values). Operands and results are laid out as
/// for [`div`].
///
/// # Errors
///
/// [`DivideError`] if `divisor` is zero or the quotient is outside the signed range of the
/// operand size (this includes the most negative dividend divided by -1 at every size).
#[inline]
pub fn idiv(
    size: OpSize,
    hi: u64,
    lo: u64,
    divisor: u64,
    rflags: u64,
) -> Result<(u64, u64, u64), DivideError> {
    let (dividend, signed_divisor): (i128, i128) = match size {
        OpSize::Byte => ((lo as i16).into(), (divisor as i8).into()),
        OpSize::Word => (
            (((hi << 16) | (lo & 0xffff)) as i32).into(),
            (divisor as i16).into(),
        ),
        OpSize::Dword => (
            (((hi << 32) | (lo & 0xffff_ffff)) as i64).into(),
            (divisor as i32).into(),
        ),
        OpSize::Qword => (
            (((hi as u128) << 64) | lo as u128) as i128,
            (divisor as i64).into(),
        ),
    };
    if !signed_quotient_fits(size, dividend, signed_divisor) {
        return Err(DivideError);
    }
    divide!("idiv", size, hi, lo, divisor, rflags)
}

/// Whether `dividend / divisor`, rounded toward zero, is a `size`-bit signed integer (and the
/// divisor is not zero).
///
/// With n = the operand width, the quotient's magnitude |q| = floor(|dividend| / |divisor|)
/// may reach 2^(n-1) when negative and 2^(n-1) - 1 when not, and floor(x / y) <= m exactly
/// when x < (m + 1) * y. The product is below 2^128 (at most (2^63 + 1) * 2^63), and a zero
/// divisor makes the comparison fail, so one multiplication decides without dividing.
#[inline]
fn signed_quotient_fits(size: OpSize, dividend: i128, divisor: i128) -> bool {
    let negative = (dividend < 0) != (divisor < 0);
    let bound = (1u128 << (size.bits() - 1)) + u128::from(negative);
    dividend.unsigned_abs() < bound * divisor.unsigned_abs()
}
