//! Tests of the ALU: hand-checked tables from the SDM, randomized comparisons of the native
//! paths with an independent model, the BCD adjustments against the SDM's pseudo-code over
//! every input, divide errors, and the conditions against the host's SETcc.

mod bcd;
mod bcd_host;
mod condition;
mod divide;
mod random;
mod reference;
mod tables;

use super::{AF, ARITH_FLAGS, CF, OF, OpSize, PF, SF, ZF};

/// Every operand size, smallest first.
const SIZES: [OpSize; 4] = [OpSize::Byte, OpSize::Word, OpSize::Dword, OpSize::Qword];

/// The arithmetic flags named by the letters of `names`, each one of `OSZAPC`.
fn flags(names: &str) -> u64 {
    names
        .chars()
        .map(|name| match name {
            'O' => OF,
            'S' => SF,
            'Z' => ZF,
            'A' => AF,
            'P' => PF,
            'C' => CF,
            _ => panic!("{name:?} is not an arithmetic flag"),
        })
        .fold(0, |all, flag| all | flag)
}

/// The arithmetic flags set in `rflags`, as letters, for failure messages.
fn flag_names(rflags: u64) -> String {
    [
        (OF, 'O'),
        (SF, 'S'),
        (ZF, 'Z'),
        (AF, 'A'),
        (PF, 'P'),
        (CF, 'C'),
    ]
    .into_iter()
    .map(|(flag, name)| if rflags & flag != 0 { name } else { '-' })
    .collect()
}

/// Asserts that `got` (RFLAGS after an operation on `before`) kept every bit outside the
/// arithmetic flags and has the arithmetic flags of `want` wherever `compared` says.
#[track_caller]
fn assert_flags(context: &dyn std::fmt::Display, before: u64, got: u64, want: u64, compared: u64) {
    assert_eq!(
        got & !ARITH_FLAGS,
        before & !ARITH_FLAGS,
        "{context}: bits outside the arithmetic flags changed"
    );
    assert_eq!(
        flag_names(got & compared),
        flag_names(want & compared),
        "{context}: flags (compared: {})",
        flag_names(compared)
    );
}

/// A xorshift64* generator: a fixed, reproducible stream of test inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An operand for `size`: one time in four a boundary value (zero, one, the sign bit and
    /// its neighbours, all ones) with random bits above the size, otherwise 64 random bits.
    fn operand(&mut self, size: OpSize) -> u64 {
        let random = self.next();
        if !random.is_multiple_of(4) {
            return random;
        }
        let sign = size.sign_bit();
        let edges = [
            0,
            1,
            2,
            0x0f,
            0x10,
            sign - 1,
            sign,
            sign + 1,
            size.mask() - 1,
            size.mask(),
        ];
        let edge = edges[(random >> 8) as usize % edges.len()];
        edge | (self.next() & !size.mask())
    }

    /// Guest RFLAGS: random everywhere, with the fixed bit 1 set.
    fn rflags(&mut self) -> u64 {
        self.next() | 2
    }
}
