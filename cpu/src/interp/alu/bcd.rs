//! The BCD adjustments (DAA, DAS, AAA, AAS, AAM, AAD), which are invalid in 64-bit mode and so
//! cannot run on the host: written out from the SDM.
//!
//! Each adjustment is an addition or subtraction: DAA adds 0x06, 0x60 or 0x66 to AL, DAS
//! subtracts it, AAA adds 0x106 or 0 to AX and AAS subtracts it (both then keep only AL's low
//! digit), AAD adds AH * base to AL. The flags the SDM leaves undefined (OF for DAA and DAS;
//! OF, SF, ZF and PF for AAA and AAS; OF, AF and CF for AAD) are on AMD Zen processors exactly
//! those of that addition or subtraction, as measured in compatibility mode over every input
//! and incoming flag combination; so the operation is done with [`binary`], whose flags are all
//! defined, and the SDM's CF and AF replace its own where the SDM defines them. AAM, a
//! division, sets SF, ZF and PF from AL and clears OF, AF and CF there. (Bochs models the P6
//! differently: OF always clear, and for AAA and AAS SF, ZF and PF from the final AL.)

use super::native::{BinaryOp, binary};
use super::{AF, CF, DivideError, OpSize, merge_arith, sign_zero_parity};

/// `flags` with CF and AF set as given.
#[inline]
fn with_carries(flags: u64, carry: bool, aux: bool) -> u64 {
    let carry = if carry { CF } else { 0 };
    let aux = if aux { AF } else { 0 };
    (flags & !(CF | AF)) | carry | aux
}

/// Whether the low digit of `al` needs adjusting: it is above 9 or the last operation carried
/// out of it (AF).
#[inline]
fn low_digit_overflowed(al: u8, rflags: u64) -> bool {
    al & 0x0f > 9 || rflags & AF != 0
}

/// DAA: AL adjusted to two packed BCD digits after an addition; the new AL and RFLAGS.
///
/// The SDM's two steps, add 6 if the low digit overflowed and add 0x60 if the original AL was
/// above 0x99 or CF was set, come to adding their sum once; CF ends as the second step's
/// condition, since the first step's carry only matters when the second step runs, and that
/// one sets CF anyway.
#[inline]
pub fn daa(al: u8, rflags: u64) -> (u8, u64) {
    let low = low_digit_overflowed(al, rflags);
    let high = al > 0x99 || rflags & CF != 0;
    let adjust = u8::from(low) * 0x06 + u8::from(high) * 0x60;
    let (result, flags) = binary(
        BinaryOp::Add,
        OpSize::Byte,
        al.into(),
        adjust.into(),
        rflags,
    );
    (result as u8, with_carries(flags, high, low))
}

/// DAS: AL adjusted to two packed BCD digits after a subtraction; the new AL and RFLAGS.
///
/// As for [`daa`] the two subtractions combine, but CF also takes the borrow of the first
/// (AL below 6), which the SDM keeps even when the second step does not run.
#[inline]
pub fn das(al: u8, rflags: u64) -> (u8, u64) {
    let low = low_digit_overflowed(al, rflags);
    let high = al > 0x99 || rflags & CF != 0;
    let adjust = u8::from(low) * 0x06 + u8::from(high) * 0x60;
    let (result, flags) = binary(
        BinaryOp::Sub,
        OpSize::Byte,
        al.into(),
        adjust.into(),
        rflags,
    );
    let carry = high || (low && al < 0x06);
    (result as u8, with_carries(flags, carry, low))
}

/// Runs AAA (`BinaryOp::Add`) or AAS (`BinaryOp::Sub`) on AX.
#[inline]
fn ascii_adjust(op: BinaryOp, ax: u16, rflags: u64) -> (u16, u64) {
    let adjust = low_digit_overflowed(ax as u8, rflags);
    let amount = if adjust { 0x106 } else { 0 };
    let (result, flags) = binary(op, OpSize::Word, ax.into(), amount, rflags);
    (result as u16 & 0xff0f, with_carries(flags, adjust, adjust))
}

/// AAA: AX adjusted to an unpacked BCD digit in AL after an addition, carrying into AH; the
/// new AX and RFLAGS (CF = AF = a carry was made).
#[inline]
pub fn aaa(ax: u16, rflags: u64) -> (u16, u64) {
    ascii_adjust(BinaryOp::Add, ax, rflags)
}

/// AAS: AX adjusted to an unpacked BCD digit in AL after a subtraction, borrowing from AH; the
/// new AX and RFLAGS (CF = AF = a borrow was made).
#[inline]
pub fn aas(ax: u16, rflags: u64) -> (u16, u64) {
    ascii_adjust(BinaryOp::Sub, ax, rflags)
}

/// AAM: AL split into AH = AL / `base` and AL = AL % `base` (`base` is 10 for the plain
/// mnemonic); the new AX and RFLAGS (SF, ZF, PF from the new AL; OF, AF, CF clear).
///
/// # Errors
///
/// [`DivideError`] if `base` is zero.
#[inline]
pub fn aam(al: u8, base: u8, rflags: u64) -> Result<(u16, u64), DivideError> {
    let (Some(high), Some(low)) = (al.checked_div(base), al.checked_rem(base)) else {
        return Err(DivideError);
    };
    let ax = u16::from_be_bytes([high, low]);
    Ok((
        ax,
        merge_arith(rflags, sign_zero_parity(OpSize::Byte, low.into())),
    ))
}

/// AAD: AL = AL + AH * `base` (`base` is 10 for the plain mnemonic), truncated to 8 bits, and
/// AH = 0; the new AX and RFLAGS (those of the 8-bit addition).
#[inline]
pub fn aad(ax: u16, base: u8, rflags: u64) -> (u16, u64) {
    let [ah, al] = ax.to_be_bytes();
    let product = ah.wrapping_mul(base);
    let (result, flags) = binary(
        BinaryOp::Add,
        OpSize::Byte,
        al.into(),
        product.into(),
        rflags,
    );
    (result as u16, flags)
}
