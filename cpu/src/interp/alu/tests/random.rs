//! The native paths against the reference model on random inputs (with random bits above the
//! operand size and in every RFLAGS bit), comparing results and the flags the SDM defines: a
//! wrong register width, operand order or flag load in an asm block shows up here.

use super::reference::{self, Flags};
use super::{Rng, SIZES, assert_flags};
use crate::interp::alu::{
    self, BinaryOp, BitTestOp, CF, OpSize, ShiftOp, UnaryOp, ZF, binary, shift, unary,
};

/// Cases per operation and operand size.
const CASES: usize = 100_000;

/// Runs `case` `CASES` times for each size in `sizes`, with a generator seeded by `seed`.
fn for_random_inputs(seed: u64, sizes: &[OpSize], mut case: impl FnMut(&mut Rng, OpSize)) {
    let mut rng = Rng::new(seed);
    for &size in sizes {
        for _ in 0..CASES {
            case(&mut rng, size);
        }
    }
}

#[track_caller]
fn assert_same(context: &dyn std::fmt::Display, before: u64, got: (u64, u64), want: (u64, Flags)) {
    assert_eq!(got.0, want.0, "{context}: result");
    assert_flags(context, before, got.1, want.1.value, want.1.defined);
}

#[test]
fn binary_matches_reference() {
    use BinaryOp::*;
    for op in [Add, Or, Adc, Sbb, And, Sub, Xor, Cmp, Test] {
        for_random_inputs(op as u64 + 1, &SIZES, |rng, size| {
            let (a, b, rflags) = (rng.operand(size), rng.operand(size), rng.rflags());
            let context = format!("{op:?} {size:?} {a:#x}, {b:#x} rflags {rflags:#x}");
            let got = binary(op, size, a, b, rflags);
            assert_same(
                &context,
                rflags,
                got,
                reference::binary(op, size, a, b, rflags),
            );
        });
    }
}

#[test]
fn unary_matches_reference() {
    use UnaryOp::*;
    for op in [Inc, Dec, Neg, Not] {
        for_random_inputs(op as u64 + 100, &SIZES, |rng, size| {
            let (a, rflags) = (rng.operand(size), rng.rflags());
            let context = format!("{op:?} {size:?} {a:#x} rflags {rflags:#x}");
            let got = unary(op, size, a, rflags);
            assert_same(&context, rflags, got, reference::unary(op, size, a, rflags));
        });
    }
}

#[test]
fn shift_matches_reference() {
    use ShiftOp::*;
    for op in [Rol, Ror, Rcl, Rcr, Shl, Shr, Sar] {
        for_random_inputs(op as u64 + 200, &SIZES, |rng, size| {
            let (a, rflags) = (rng.operand(size), rng.rflags());
            let count = rng.next() as u8;
            let context = format!("{op:?} {size:?} {a:#x}, {count} rflags {rflags:#x}");
            let got = shift(op, size, a, count, rflags);
            assert_same(
                &context,
                rflags,
                got,
                reference::shift(op, size, a, count, rflags),
            );
        });
    }
}

#[test]
fn double_shift_matches_reference() {
    for (left, function) in [
        (true, alu::shld as fn(_, _, _, _, _) -> _),
        (false, alu::shrd),
    ] {
        for_random_inputs(u64::from(left) + 300, &SIZES[1..], |rng, size| {
            let (dst, src, rflags) = (rng.operand(size), rng.operand(size), rng.rflags());
            let count = rng.next() as u8;
            let context = format!(
                "SH{}D {size:?} {dst:#x}, {src:#x}, {count} rflags {rflags:#x}",
                if left { 'L' } else { 'R' }
            );
            let (result, got_flags) = function(size, dst, src, count, rflags);
            let (want, flags) = reference::double_shift(left, size, dst, src, count, rflags);
            if let Some(want) = want {
                assert_eq!(result, want, "{context}: result");
            }
            assert_flags(&context, rflags, got_flags, flags.value, flags.defined);
        });
    }
}

#[test]
fn multiply_matches_reference() {
    for (signed, function) in [
        (false, alu::mul as fn(_, _, _, _) -> _),
        (true, alu::imul_wide),
    ] {
        for_random_inputs(u64::from(signed) + 400, &SIZES, |rng, size| {
            let (a, b, rflags) = (rng.operand(size), rng.operand(size), rng.rflags());
            let context = format!("signed {signed} {size:?} {a:#x} * {b:#x}");
            let (product, got_flags) = function(size, a, b, rflags);
            let (want, flags) = reference::widening_multiply(signed, size, a, b);
            assert_eq!(product, want, "{context}: product");
            assert_flags(&context, rflags, got_flags, flags.value, flags.defined);
        });
    }
    for_random_inputs(402, &SIZES[1..], |rng, size| {
        let (a, b, rflags) = (rng.operand(size), rng.operand(size), rng.rflags());
        let context = format!("IMUL {size:?} {a:#x}, {b:#x}");
        let got = alu::imul(size, a, b, rflags);
        assert_same(&context, rflags, got, reference::imul(size, a, b));
    });
}

#[test]
fn divide_matches_reference() {
    type Divide = fn(OpSize, u64, u64, u64, u64) -> Result<(u64, u64, u64), alu::DivideError>;
    type Model = fn(OpSize, u64, u64, u64) -> Result<(u64, u64), alu::DivideError>;
    let pairs: [(&str, Divide, Model); 2] = [
        ("DIV", alu::div, reference::div),
        ("IDIV", alu::idiv, reference::idiv),
    ];
    for (seed, (name, function, model)) in (500..).zip(pairs) {
        let mut faults = 0;
        for_random_inputs(seed, &SIZES, |rng, size| {
            let (lo, divisor, rflags) = (rng.operand(size), rng.operand(size), rng.rflags());
            // Half the dividends have a high half that only extends lo (with zeros or its
            // sign), so that most of those divide without a fault.
            let hi = match rng.next() % 4 {
                0 => 0,
                1 if lo & size.sign_bit() != 0 => size.mask(),
                1 => 0,
                _ => rng.operand(size),
            };
            let context = format!("{name} {size:?} {hi:#x}:{lo:#x} / {divisor:#x}");
            let got = function(size, hi, lo, divisor, rflags);
            match model(size, hi, lo, divisor) {
                Ok((quotient, remainder)) => {
                    let (got_quotient, got_remainder, got_flags) =
                        got.unwrap_or_else(|error| panic!("{context}: {error}"));
                    assert_eq!(
                        (got_quotient, got_remainder),
                        (quotient, remainder),
                        "{context}"
                    );
                    assert_flags(&context, rflags, got_flags, 0, 0);
                }
                Err(error) => {
                    faults += 1;
                    assert_eq!(got, Err(error), "{context}");
                }
            }
        });
        assert!(
            faults > CASES / 10 && faults < 3 * CASES,
            "{name}: {faults} faults"
        );
    }
}

#[test]
fn bit_test_matches_reference() {
    use BitTestOp::*;
    for op in [Bt, Bts, Btr, Btc] {
        for_random_inputs(op as u64 + 600, &SIZES[1..], |rng, size| {
            let (value, bit, rflags) = (rng.operand(size), rng.next(), rng.rflags());
            let context = format!("{op:?} {size:?} {value:#x}, {bit}");
            let selected = 1u64 << (bit % u64::from(size.bits()));
            let value_masked = value & size.mask();
            let result = match op {
                Bt => value_masked,
                Bts => value_masked | selected,
                Btr => value_masked & !selected,
                Btc => value_masked ^ selected,
            };
            let carry = if value & selected != 0 { CF } else { 0 };
            let got = alu::bit_test(op, size, value, bit, rflags);
            assert_same(
                &context,
                rflags,
                got,
                (
                    result,
                    Flags {
                        value: carry,
                        defined: CF,
                    },
                ),
            );
        });
    }
}

#[test]
fn bit_scan_matches_reference() {
    for (forward, function) in [(true, alu::bsf as fn(_, _, _, _) -> _), (false, alu::bsr)] {
        for_random_inputs(u64::from(forward) + 700, &SIZES[1..], |rng, size| {
            let (src, dst_old, rflags) = (rng.operand(size), rng.next(), rng.rflags());
            let context = format!("forward {forward} {size:?} {src:#x} into {dst_old:#x}");
            let (register, got_flags) = function(size, src, dst_old, rflags);
            let source = src & size.mask();
            let zero = if source == 0 { ZF } else { 0 };
            assert_flags(&context, rflags, got_flags, zero, ZF);
            if source != 0 {
                let index = if forward {
                    source.trailing_zeros()
                } else {
                    63 - source.leading_zeros()
                };
                let kept = if size == OpSize::Word {
                    dst_old & !0xffff
                } else {
                    0
                };
                assert_eq!(register, kept | u64::from(index), "{context}");
            }
        });
    }
}
