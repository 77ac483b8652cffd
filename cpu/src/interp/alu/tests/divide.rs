//! Divide errors (#DE) at every size: a zero divisor, a quotient one past the largest, and for
//! IDIV the most negative dividend divided by -1; with the neighbouring cases that do not fault.

use super::SIZES;
use crate::interp::alu::{DivideError, OpSize, div, idiv};

/// The double-width dividend `value` (in two's complement) as the `(hi, lo)` the divide
/// functions take: AX in `lo` for bytes, otherwise halves of `size` bits.
fn split(size: OpSize, value: u128) -> (u64, u64) {
    let bits = size.bits();
    match size {
        OpSize::Byte => (0, value as u64 & 0xffff),
        _ => (
            (value >> bits) as u64 & size.mask(),
            value as u64 & size.mask(),
        ),
    }
}

#[test]
fn div_faults_exactly_when_the_quotient_does_not_fit() {
    for size in SIZES {
        let max = size.mask();
        let fault = |(hi, lo), divisor| div(size, hi, lo, divisor, 2);
        assert_eq!(fault((0, 0), 0), Err(DivideError), "{size:?} 0 / 0");
        assert_eq!(fault(split(size, 1), 0), Err(DivideError), "{size:?} 1 / 0");
        // Only the low `size` bits of the divisor count.
        let above = max.wrapping_add(1);
        assert_eq!(
            fault(split(size, 1), above),
            Err(DivideError),
            "{size:?} high divisor"
        );
        // max * divisor + (divisor - 1) is the largest dividend whose quotient fits.
        for divisor in [1, 2, 3, max] {
            let largest = u128::from(max) * u128::from(divisor) + u128::from(divisor) - 1;
            let (q, r, _) = fault(split(size, largest), divisor).expect("largest fitting");
            assert_eq!((q, r), (max, divisor - 1), "{size:?} largest / {divisor}");
            assert_eq!(
                fault(split(size, largest + 1), divisor),
                Err(DivideError),
                "{size:?}"
            );
        }
    }
}

#[test]
fn idiv_faults_exactly_when_the_quotient_does_not_fit() {
    for size in SIZES {
        let half = 1i128 << (size.bits() - 1);
        let minus_one = size.mask();
        let minus_two = size.mask() - 1;
        let idiv_of = |dividend: i128, divisor| {
            let (hi, lo) = split(size, dividend as u128);
            idiv(size, hi, lo, divisor, 2)
        };
        assert_eq!(idiv_of(0, 0), Err(DivideError), "{size:?} 0 / 0");
        assert_eq!(idiv_of(-1, 0), Err(DivideError), "{size:?} -1 / 0");
        // The most negative single-width value divided by -1.
        assert_eq!(
            idiv_of(-half, minus_one),
            Err(DivideError),
            "{size:?} MIN / -1"
        );
        // The most negative double-width value divided by -1 (its quotient would not even fit
        // 128 bits at 64-bit operands).
        let double_min = -(half * half) * 2;
        assert_eq!(
            idiv_of(double_min, minus_one),
            Err(DivideError),
            "{size:?} 2MIN / -1"
        );
        // The quotient may reach -2^(n-1) but not 2^(n-1).
        let (q, r, _) = idiv_of(-2 * half, 2).expect("-2^n / 2");
        assert_eq!((q, r), (half as u64, 0), "{size:?} -2^n / 2");
        assert_eq!(
            idiv_of(-2 * half, minus_two),
            Err(DivideError),
            "{size:?} -2^n / -2"
        );
        assert_eq!(idiv_of(2 * half, 2), Err(DivideError), "{size:?} 2^n / 2");
        let (q, r, _) = idiv_of(2 * half - 1, 2).expect("(2^n - 1) / 2");
        assert_eq!((q, r), (half as u64 - 1, 1), "{size:?} (2^n - 1) / 2");
        let (q, r, _) = idiv_of(-2 * half - 1, 2).expect("(-2^n - 1) / 2");
        assert_eq!(
            (q, r),
            (half as u64, size.mask()),
            "{size:?} (-2^n - 1) / 2"
        );
        let (q, r, _) = idiv_of(-half + 1, minus_one).expect("(1 - 2^(n-1)) / -1");
        assert_eq!((q, r), (half as u64 - 1, 0), "{size:?} (1 - 2^(n-1)) / -1");
    }
}
