//! PE when an overflow or underflow is unmasked.
//!
//! With OE unmasked, an element that overflows does not deliver infinity or the largest
//! finite number; with UE unmasked, a tiny element is not denormalized. The processor then
//! sets PE for such an element only if its result, rounded to the destination's precision
//! with an unbounded exponent, is inexact (measured: `2 * FLT_MAX` overflows without PE,
//! `1.5000001 * FLT_MAX` with it). A computation with every exception masked reports the loss
//! of the delivered infinity or denormal instead, so for the operations whose elements can
//! overflow or underflow this module recomputes the flags element by element: each element
//! alone on the host's SSE unit for its own flags (the other elements set to 1.0, which raise
//! nothing), and, where the unmasked response applies, the element again on the x87 unit,
//! whose 15-bit exponent never overflows or underflows for single or double operands, with
//! the precision control set to the destination's precision: its PE is the one wanted.

use iced_x86::Mnemonic;

use super::lanes::{element, with_element};
use crate::interp::fpu::simd::FloatOp;
use crate::interp::fpu::{FxState, mxcsr, x87};

/// The x87 ModR/M bytes of FADD, FSUB, FMUL and FDIV ST0, ST1 (opcode D8).
const FADD: u8 = 0xc1;
const FSUB: u8 = 0xe1;
const FMUL: u8 = 0xc9;
const FDIV: u8 = 0xf1;

/// Overflow.
const OE: u32 = 1 << 3;
/// Precision.
const PE: u32 = 1 << 5;

/// An input element: of the destination (`A`) or the source (`B`), by index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    A(usize),
    B(usize),
}

/// What one element of the result computes: `left op right`, or a conversion of `left`
/// (computed as `left + 0`) when `right` is `None`.
#[derive(Clone, Copy)]
struct Term {
    modrm: u8,
    left: Input,
    right: Option<Input>,
}

/// The operations whose elements can overflow or underflow: their input and output element
/// sizes and what each output element computes.
fn terms(m: Mnemonic) -> Option<(usize, usize, Vec<Term>)> {
    use Input::{A, B};
    use Mnemonic::*;
    let vertical = |modrm: u8, count: usize| {
        (0..count)
            .map(|k| Term {
                modrm,
                left: A(k),
                right: Some(B(k)),
            })
            .collect::<Vec<_>>()
    };
    let alternating = |count: usize| {
        (0..count)
            .map(|k| Term {
                modrm: if k % 2 == 0 { FSUB } else { FADD },
                left: A(k),
                right: Some(B(k)),
            })
            .collect::<Vec<_>>()
    };
    let horizontal = |modrm: u8, count: usize| {
        (0..count)
            .map(|k| {
                let half = count / 2;
                let pair = |input: fn(usize) -> Input, j: usize| Term {
                    modrm,
                    left: input(2 * j),
                    right: Some(input(2 * j + 1)),
                };
                if k < half {
                    pair(A, k)
                } else {
                    pair(B, k - half)
                }
            })
            .collect::<Vec<_>>()
    };
    let convert = |count: usize| {
        (0..count)
            .map(|k| Term {
                modrm: FADD,
                left: B(k),
                right: None,
            })
            .collect::<Vec<_>>()
    };
    Some(match m {
        Addps => (4, 4, vertical(FADD, 4)),
        Subps => (4, 4, vertical(FSUB, 4)),
        Mulps => (4, 4, vertical(FMUL, 4)),
        Divps => (4, 4, vertical(FDIV, 4)),
        Addss => (4, 4, vertical(FADD, 1)),
        Subss => (4, 4, vertical(FSUB, 1)),
        Mulss => (4, 4, vertical(FMUL, 1)),
        Divss => (4, 4, vertical(FDIV, 1)),
        Addpd => (8, 8, vertical(FADD, 2)),
        Subpd => (8, 8, vertical(FSUB, 2)),
        Mulpd => (8, 8, vertical(FMUL, 2)),
        Divpd => (8, 8, vertical(FDIV, 2)),
        Addsd => (8, 8, vertical(FADD, 1)),
        Subsd => (8, 8, vertical(FSUB, 1)),
        Mulsd => (8, 8, vertical(FMUL, 1)),
        Divsd => (8, 8, vertical(FDIV, 1)),
        Addsubps => (4, 4, alternating(4)),
        Addsubpd => (8, 8, alternating(2)),
        Haddps => (4, 4, horizontal(FADD, 4)),
        Hsubps => (4, 4, horizontal(FSUB, 4)),
        Haddpd => (8, 8, horizontal(FADD, 2)),
        Hsubpd => (8, 8, horizontal(FSUB, 2)),
        Cvtsd2ss => (8, 4, convert(1)),
        Cvtpd2ps => (8, 4, convert(2)),
        _ => return None,
    })
}

/// 1.0 in an element of `size` bytes.
fn one(size: usize) -> u128 {
    if size == 4 {
        u128::from(1.0f32.to_bits())
    } else {
        u128::from(1.0f64.to_bits())
    }
}

/// The 80-bit extended value of the single (`size` 4) or double (8) `bits`, exactly; a
/// denormal is zero under DAZ.
fn extended(bits: u64, size: usize, daz: bool) -> u128 {
    let (sign, exponent, fraction, fraction_bits, bias) = if size == 4 {
        (
            (bits >> 31) & 1,
            (bits >> 23) & 0xff,
            bits & 0x7f_ffff,
            23,
            127,
        )
    } else {
        (
            bits >> 63,
            (bits >> 52) & 0x7ff,
            bits & ((1 << 52) - 1),
            52,
            1023,
        )
    };
    let sign = u128::from(sign) << 79;
    let maximum = if size == 4 { 0xff } else { 0x7ff };
    if exponent == maximum {
        return sign | (0x7fff << 64) | (1 << 63) | u128::from(fraction << (63 - fraction_bits));
    }
    if exponent == 0 && (fraction == 0 || daz) {
        return sign;
    }
    // The value is significand * 2^power.
    let (significand, power) = if exponent == 0 {
        (fraction, 1 - bias - fraction_bits)
    } else {
        (
            fraction | (1 << fraction_bits),
            exponent as i64 - bias - fraction_bits,
        )
    };
    let top = 63 - i64::from(significand.leading_zeros());
    let mantissa = significand << (63 - top);
    let biased = (power + top + 16383) as u128;
    sign | (biased << 64) | u128::from(mantissa)
}

/// Whether `term`, rounded to an output element of `output` bytes by the rounding control of
/// `control` with an unbounded exponent, is inexact.
fn unbounded_inexact(term: Term, a: u128, b: u128, sizes: (usize, usize), control: u32) -> bool {
    let (input, output) = sizes;
    let daz = control & (1 << 6) != 0;
    let value = |operand: Input| {
        let (vector, k) = match operand {
            Input::A(k) => (a, k),
            Input::B(k) => (b, k),
        };
        extended(element(vector, input, k) as u64, input, daz)
    };
    let precision: u16 = if output == 4 { 0 } else { 2 };
    let rounding = ((control >> 13) & 3) as u16;
    let mut state = FxState::default();
    state.fcw = 0x3f | (precision << 8) | (rounding << 10);
    state.fsw = 6 << 11;
    state.ftw = 0xc0;
    state.st[0] = value(term.left);
    state.st[1] = term.right.map_or(0, value);
    let outcome = x87::run_register(&mut state, 0xd8, term.modrm, 0x2);
    u32::from(outcome.raised) & PE != 0
}

/// The flags the processor sets for `m` on `a` and `b` under `control`, whose OE or UE is
/// unmasked and which raised one of them; `None` for an operation of another shape. `op` is
/// the operation as the host runs it (every exception masked).
pub(super) fn unmasked_response_flags(
    m: Mnemonic,
    op: FloatOp,
    a: u128,
    b: u128,
    control: u32,
) -> Option<u32> {
    let (input, output, terms) = terms(m)?;
    let unmasked = |flag: u32| control & (flag << 7) == 0;
    let mut flags = 0;
    for term in terms {
        let used = |operand: Input| term.left == operand || term.right == Some(operand);
        let isolate = |vector: u128, source: fn(usize) -> Input| {
            (0..16 / input).fold(vector, |isolated, k| {
                if used(source(k)) {
                    isolated
                } else {
                    with_element(isolated, input, k, one(input))
                }
            })
        };
        let (a1, b1) = (isolate(a, Input::A), isolate(b, Input::B));
        let (_, mut own) = op(a1, b1, control);
        if unmasked(mxcsr::UE) {
            let (_, flushed) = op(a1, b1, control | mxcsr::FTZ);
            own |= flushed & mxcsr::UE;
        }
        let overflow = own & OE != 0 && unmasked(OE);
        let underflow = own & mxcsr::UE != 0 && unmasked(mxcsr::UE);
        if overflow || underflow {
            own &= !PE;
            if unbounded_inexact(term, a, b, (input, output), control) {
                own |= PE;
            }
        }
        flags |= own;
    }
    Some(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_values_are_exact() {
        let x = |bits: u64, size| extended(bits, size, false);
        assert_eq!(x(1.0f32.to_bits().into(), 4), 0x3fff_8000_0000_0000_0000);
        assert_eq!(x((-2.5f64).to_bits(), 8), 0xc000_a000_0000_0000_0000);
        // The smallest single denormal, 2^-149.
        assert_eq!(x(1, 4), ((16383 - 149) << 64) | (1 << 63));
        assert_eq!(extended(1, 4, true), 0);
        assert_eq!(
            x(f64::MIN_POSITIVE.to_bits(), 8),
            ((16383 - 1022) << 64) | (1 << 63)
        );
    }
}
