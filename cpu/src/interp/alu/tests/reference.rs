//! An independent model of the integer instructions, written from the SDM's descriptions with
//! 128-bit arithmetic: the result and the flags the SDM defines, and which flags those are.

use crate::interp::alu::{
    AF, ARITH_FLAGS, BinaryOp, CF, DivideError, OF, OpSize, PF, SF, ShiftOp, UnaryOp, Wide, ZF,
};

/// The arithmetic flags an instruction is expected to leave: `value` where `defined` is set,
/// anything elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    pub value: u64,
    pub defined: u64,
}

fn flag(condition: bool, flag: u64) -> u64 {
    if condition { flag } else { 0 }
}

/// `value` (of `size`) as a signed number.
fn signed(size: OpSize, value: u64) -> i128 {
    let unused = 128 - size.bits();
    ((value as i128) << unused) >> unused
}

fn msb(size: OpSize, value: u64) -> bool {
    (value >> (size.bits() - 1)) & 1 == 1
}

/// SF, ZF and PF of `result` (of `size`).
fn sign_zero_parity(size: OpSize, result: u64) -> u64 {
    let low_byte_bits = (0..8).filter(|bit| (result >> bit) & 1 == 1).count();
    flag(msb(size, result), SF) | flag(result == 0, ZF) | flag(low_byte_bits % 2 == 0, PF)
}

fn fits_signed(size: OpSize, value: i128) -> bool {
    let half = 1i128 << (size.bits() - 1);
    (-half..half).contains(&value)
}

/// `a + b + carry`: the result and all six flags.
pub fn add(size: OpSize, a: u64, b: u64, carry: u64) -> (u64, u64) {
    let sum = u128::from(a) + u128::from(b) + u128::from(carry);
    let result = sum as u64 & size.mask();
    let signed_sum = signed(size, a) + signed(size, b) + i128::from(carry);
    let flags = flag(sum > u128::from(size.mask()), CF)
        | flag(!fits_signed(size, signed_sum), OF)
        | flag((a & 0xf) + (b & 0xf) + carry > 0xf, AF)
        | sign_zero_parity(size, result);
    (result, flags)
}

/// `a - b - borrow`: the result and all six flags.
pub fn sub(size: OpSize, a: u64, b: u64, borrow: u64) -> (u64, u64) {
    let result = a.wrapping_sub(b).wrapping_sub(borrow) & size.mask();
    let signed_difference = signed(size, a) - signed(size, b) - i128::from(borrow);
    let flags = flag(u128::from(a) < u128::from(b) + u128::from(borrow), CF)
        | flag(!fits_signed(size, signed_difference), OF)
        | flag((a & 0xf) < (b & 0xf) + borrow, AF)
        | sign_zero_parity(size, result);
    (result, flags)
}

/// A logical operation's flags: CF and OF clear, AF undefined.
fn logic(size: OpSize, result: u64) -> Flags {
    Flags {
        value: sign_zero_parity(size, result),
        defined: ARITH_FLAGS & !AF,
    }
}

pub fn binary(op: BinaryOp, size: OpSize, a: u64, b: u64, rflags: u64) -> (u64, Flags) {
    let (a, b) = (a & size.mask(), b & size.mask());
    let carry = rflags & CF;
    let all = |(result, value)| {
        (
            result,
            Flags {
                value,
                defined: ARITH_FLAGS,
            },
        )
    };
    match op {
        BinaryOp::Add => all(add(size, a, b, 0)),
        BinaryOp::Adc => all(add(size, a, b, carry)),
        BinaryOp::Sub => all(sub(size, a, b, 0)),
        BinaryOp::Sbb => all(sub(size, a, b, carry)),
        BinaryOp::Cmp => all((a, sub(size, a, b, 0).1)),
        BinaryOp::And => (a & b, logic(size, a & b)),
        BinaryOp::Or => (a | b, logic(size, a | b)),
        BinaryOp::Xor => (a ^ b, logic(size, a ^ b)),
        BinaryOp::Test => (a, logic(size, a & b)),
    }
}

pub fn unary(op: UnaryOp, size: OpSize, a: u64, rflags: u64) -> (u64, Flags) {
    let a = a & size.mask();
    let keep_carry = |(result, value): (u64, u64)| {
        (
            result,
            Flags {
                value: (value & !CF) | (rflags & CF),
                defined: ARITH_FLAGS,
            },
        )
    };
    match op {
        UnaryOp::Inc => keep_carry(add(size, a, 1, 0)),
        UnaryOp::Dec => keep_carry(sub(size, a, 1, 0)),
        UnaryOp::Neg => {
            let (result, value) = sub(size, 0, a, 0);
            let defined = ARITH_FLAGS;
            (result, Flags { value, defined })
        }
        UnaryOp::Not => (
            !a & size.mask(),
            Flags {
                value: rflags,
                defined: ARITH_FLAGS,
            },
        ),
    }
}

/// The count a shift uses: the low 5 bits, or 6 for 64-bit operands.
fn masked_count(size: OpSize, count: u8) -> u32 {
    let mask = if size == OpSize::Qword { 0x3f } else { 0x1f };
    u32::from(count) & mask
}

/// `value`, `width` bits wide, rotated left by `by` (< `width`).
fn rotate_left(value: u128, width: u32, by: u32) -> u128 {
    let mask = (1u128 << width) - 1;
    if by == 0 {
        value
    } else {
        ((value << by) | (value >> (width - by))) & mask
    }
}

pub fn shift(op: ShiftOp, size: OpSize, a: u64, count: u8, rflags: u64) -> (u64, Flags) {
    let a = a & size.mask();
    let bits = size.bits();
    let count = masked_count(size, count);
    if count == 0 {
        let value = rflags;
        let defined = ARITH_FLAGS;
        return (a, Flags { value, defined });
    }
    let only_first = |defined: u64| {
        if count == 1 { defined } else { defined & !OF }
    };
    match op {
        ShiftOp::Shl | ShiftOp::Shr | ShiftOp::Sar => {
            let (result, carry, overflow) = match op {
                ShiftOp::Shl => {
                    let result = (u128::from(a) << count) as u64 & size.mask();
                    let carry = count <= bits && (u128::from(a) >> (bits - count)) & 1 == 1;
                    (result, carry, msb(size, result) != carry)
                }
                ShiftOp::Shr => {
                    let result = (u128::from(a) >> count) as u64;
                    (result, (a >> (count - 1)) & 1 == 1, msb(size, a))
                }
                _ => {
                    let wide = signed(size, a);
                    let result = (wide >> count) as u64 & size.mask();
                    (result, (wide >> (count - 1)) & 1 == 1, false)
                }
            };
            // The SDM leaves CF undefined when SHL or SHR shift by the width or more.
            let carry_defined = op == ShiftOp::Sar || count < bits;
            let value = sign_zero_parity(size, result) | flag(carry, CF) | flag(overflow, OF);
            let defined = only_first(SF | ZF | PF | OF | flag(carry_defined, CF));
            (result, Flags { value, defined })
        }
        ShiftOp::Rol | ShiftOp::Ror => {
            let left = if op == ShiftOp::Rol {
                count % bits
            } else {
                (bits - count % bits) % bits
            };
            let result = rotate_left(a.into(), bits, left) as u64;
            let (carry, overflow) = if op == ShiftOp::Rol {
                let carry = result & 1 == 1;
                (carry, msb(size, result) != carry)
            } else {
                let second = (result >> (bits - 2)) & 1 == 1;
                (msb(size, result), msb(size, result) != second)
            };
            let value = (rflags & (SF | ZF | AF | PF)) | flag(carry, CF) | flag(overflow, OF);
            (
                result,
                Flags {
                    value,
                    defined: only_first(ARITH_FLAGS),
                },
            )
        }
        ShiftOp::Rcl | ShiftOp::Rcr => {
            let width = bits + 1;
            let with_carry = (u128::from(rflags & CF) << bits) | u128::from(a);
            let by = count % width;
            let left = if op == ShiftOp::Rcl {
                by
            } else {
                (width - by) % width
            };
            let rotated = rotate_left(with_carry, width, left);
            let result = rotated as u64 & size.mask();
            let carry = (rotated >> bits) & 1 == 1;
            let overflow = if op == ShiftOp::Rcl {
                msb(size, result) != carry
            } else {
                msb(size, a) != (rflags & CF != 0)
            };
            let value = (rflags & (SF | ZF | AF | PF)) | flag(carry, CF) | flag(overflow, OF);
            (
                result,
                Flags {
                    value,
                    defined: only_first(ARITH_FLAGS),
                },
            )
        }
    }
}

/// SHLD (`left`) or SHRD: `None` for the result where the SDM leaves it undefined (a count
/// above the operand width).
pub fn double_shift(
    left: bool,
    size: OpSize,
    dst: u64,
    src: u64,
    count: u8,
    rflags: u64,
) -> (Option<u64>, Flags) {
    let (dst, src) = (dst & size.mask(), src & size.mask());
    let bits = size.bits();
    let count = masked_count(size, count);
    if count == 0 {
        let value = rflags;
        return (
            Some(dst),
            Flags {
                value,
                defined: ARITH_FLAGS,
            },
        );
    }
    if count > bits {
        return (
            None,
            Flags {
                value: 0,
                defined: 0,
            },
        );
    }
    let (result, carry) = if left {
        let joined = (u128::from(dst) << bits) | u128::from(src);
        let result = (joined << count >> bits) as u64 & size.mask();
        (result, (dst >> (bits - count)) & 1 == 1)
    } else {
        let joined = (u128::from(src) << bits) | u128::from(dst);
        let result = (joined >> count) as u64 & size.mask();
        (result, (dst >> (count - 1)) & 1 == 1)
    };
    let overflow = msb(size, result) != msb(size, dst);
    let value = sign_zero_parity(size, result) | flag(carry, CF) | flag(overflow, OF);
    let defined = SF | ZF | PF | CF | flag(count == 1, OF);
    (Some(result), Flags { value, defined })
}

/// One-operand MUL (`signed` false) or IMUL.
pub fn widening_multiply(signed_multiply: bool, size: OpSize, a: u64, b: u64) -> (Wide, Flags) {
    let (a, b) = (a & size.mask(), b & size.mask());
    let (product, lost) = if signed_multiply {
        let product = signed(size, a) * signed(size, b);
        (product as u128, !fits_signed(size, product))
    } else {
        let product = u128::from(a) * u128::from(b);
        (product, product > u128::from(size.mask()))
    };
    let wide = match size {
        OpSize::Byte => Wide {
            lo: product as u64 & 0xffff,
            hi: 0,
        },
        _ => Wide {
            lo: product as u64 & size.mask(),
            hi: (product >> size.bits()) as u64 & size.mask(),
        },
    };
    let value = flag(lost, CF | OF);
    (
        wide,
        Flags {
            value,
            defined: CF | OF,
        },
    )
}

/// Two-operand IMUL.
pub fn imul(size: OpSize, a: u64, b: u64) -> (u64, Flags) {
    let product = signed(size, a & size.mask()) * signed(size, b & size.mask());
    let value = flag(!fits_signed(size, product), CF | OF);
    (
        product as u64 & size.mask(),
        Flags {
            value,
            defined: CF | OF,
        },
    )
}

/// The dividend DIV and IDIV use: AX for bytes, otherwise `hi:lo` at twice the size.
fn dividend(size: OpSize, hi: u64, lo: u64) -> u128 {
    match size {
        OpSize::Byte => u128::from(lo & 0xffff),
        _ => (u128::from(hi & size.mask()) << size.bits()) | u128::from(lo & size.mask()),
    }
}

/// DIV: the quotient and remainder (every flag is undefined).
pub fn div(size: OpSize, hi: u64, lo: u64, divisor: u64) -> Result<(u64, u64), DivideError> {
    let divisor = u128::from(divisor & size.mask());
    let dividend = dividend(size, hi, lo);
    let quotient = dividend.checked_div(divisor).ok_or(DivideError)?;
    if quotient > u128::from(size.mask()) {
        return Err(DivideError);
    }
    Ok((quotient as u64, (dividend % divisor) as u64))
}

/// IDIV: the quotient and remainder (every flag is undefined).
pub fn idiv(size: OpSize, hi: u64, lo: u64, divisor: u64) -> Result<(u64, u64), DivideError> {
    let unused = 128 - 2 * size.bits();
    let dividend = ((dividend(size, hi, lo) << unused) as i128) >> unused;
    let divisor = signed(size, divisor & size.mask());
    let quotient = dividend.checked_div(divisor).ok_or(DivideError)?;
    if !fits_signed(size, quotient) {
        return Err(DivideError);
    }
    let remainder = dividend % divisor;
    Ok((
        quotient as u64 & size.mask(),
        remainder as u64 & size.mask(),
    ))
}
