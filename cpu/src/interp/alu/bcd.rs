//! The BCD adjustments (DAA, DAS, AAA, AAS, AAM, AAD), which are invalid in 64-bit mode and so
//! cannot run on the host: written out from the SDM.
//!
//! The SDM leaves some of their flags undefined. Those follow Bochs (`cpu/bcd.cc`), whose
//! implementation "seems to match the P6 and its derived processors" and is validated against
//! Intel hardware: each instruction sets SF, ZF and PF from the final AL and clears OF, as a
//! logical operation on AL would, then sets the CF and AF it defines (AAM and AAD define
//! neither and clear both).

use super::{AF, CF, DivideError, OpSize, merge_arith, sign_zero_parity};

/// The flags of a BCD adjustment that leaves `al`: SF, ZF, PF from it, OF clear, and CF and AF
/// as given.
#[inline]
fn adjusted_flags(rflags: u64, al: u8, carry: bool, aux: bool) -> u64 {
    let mut flags = sign_zero_parity(OpSize::Byte, al.into());
    if carry {
        flags |= CF;
    }
    if aux {
        flags |= AF;
    }
    merge_arith(rflags, flags)
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
/// above 0x99 or CF was set, come to adding their sum once: the first step's carry only
/// matters when the second step runs, and that one sets CF anyway.
#[inline]
pub fn daa(al: u8, rflags: u64) -> (u8, u64) {
    let low = low_digit_overflowed(al, rflags);
    let high = al > 0x99 || rflags & CF != 0;
    let adjust = u8::from(low) * 0x06 + u8::from(high) * 0x60;
    let result = al.wrapping_add(adjust);
    (result, adjusted_flags(rflags, result, high, low))
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
    let result = al.wrapping_sub(adjust);
    let carry = high || (low && al < 0x06);
    (result, adjusted_flags(rflags, result, carry, low))
}

/// AAA: AX adjusted to an unpacked BCD digit in AL after an addition, carrying into AH; the
/// new AX and RFLAGS (CF = AF = a carry was made).
#[inline]
pub fn aaa(ax: u16, rflags: u64) -> (u16, u64) {
    let adjust = low_digit_overflowed(ax as u8, rflags);
    let ax = if adjust { ax.wrapping_add(0x106) } else { ax } & 0xff0f;
    (ax, adjusted_flags(rflags, ax as u8, adjust, adjust))
}

/// AAS: AX adjusted to an unpacked BCD digit in AL after a subtraction, borrowing from AH; the
/// new AX and RFLAGS (CF = AF = a borrow was made).
#[inline]
pub fn aas(ax: u16, rflags: u64) -> (u16, u64) {
    let adjust = low_digit_overflowed(ax as u8, rflags);
    let ax = if adjust { ax.wrapping_sub(0x106) } else { ax } & 0xff0f;
    (ax, adjusted_flags(rflags, ax as u8, adjust, adjust))
}

/// AAM: AL split into AH = AL / `base` and AL = AL % `base` (`base` is 10 for the plain
/// mnemonic); the new AX and RFLAGS (SF, ZF, PF from the new AL).
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
    Ok((ax, adjusted_flags(rflags, low, false, false)))
}

/// AAD: AL = AL + AH * `base` (`base` is 10 for the plain mnemonic, truncated to 8 bits) and
/// AH = 0; the new AX and RFLAGS (SF, ZF, PF from the new AL).
#[inline]
pub fn aad(ax: u16, base: u8, rflags: u64) -> (u16, u64) {
    let [ah, al] = ax.to_be_bytes();
    let al = al.wrapping_add(ah.wrapping_mul(base));
    (al.into(), adjusted_flags(rflags, al, false, false))
}
