//! Hand-checked cases from the SDM: carries, overflows, zero, sign, parity and auxiliary-carry
//! edges at every size, and the shift and rotate counts where masking and the 9- and 17-bit
//! rotations through CF matter. Each row names the flags it compares, leaving out those the
//! SDM leaves undefined for that case.

use super::{SIZES, assert_flags, flags};
use crate::interp::alu::{
    self, BinaryOp, BitTestOp, OpSize, ShiftOp, UnaryOp, Wide, binary, shift, unary,
};
use BinaryOp::*;
use OpSize::*;
use ShiftOp::*;
use UnaryOp::*;

/// All six arithmetic flags.
const ALL: &str = "OSZAPC";
/// All but AF, which the logical operations and shifts leave undefined.
const NOT_AF: &str = "OSZPC";
/// All but OF and AF: a shift by more than one.
const SZPC: &str = "SZPC";
/// All but OF: a rotate by more than one.
const NOT_OF: &str = "SZAPC";

/// Bits set in every incoming RFLAGS besides the named flags, to show they survive: bit 1, IF,
/// DF and ID.
const OTHER_BITS: u64 = 0x2 | 0x200 | 0x400 | 0x20_0000;

/// A row: operation, size, a, b, flags in, result, flags out, flags compared.
type BinaryRow = (
    BinaryOp,
    OpSize,
    u64,
    u64,
    &'static str,
    u64,
    &'static str,
    &'static str,
);

/// A row: operation, size, a, count, flags in, result, flags out, flags compared.
type ShiftRow = (
    ShiftOp,
    OpSize,
    u64,
    u8,
    &'static str,
    u64,
    &'static str,
    &'static str,
);

/// Checks one operation's result and flags.
#[track_caller]
fn check(context: String, flags_in: &str, got: (u64, u64), result: u64, out: &str, compared: &str) {
    assert_eq!(got.0, result, "{context}: result");
    let before = flags(flags_in) | OTHER_BITS;
    assert_flags(&context, before, got.1, flags(out), flags(compared));
}

#[test]
fn binary_table() {
    const SIGN64: u64 = 1 << 63;
    #[rustfmt::skip]
    let rows: &[BinaryRow] = &[
        (Add, Byte, 0x7f, 1, "", 0x80, "OSA", ALL),
        (Add, Byte, 0xff, 1, "", 0, "ZAPC", ALL),
        (Add, Byte, 0x80, 0x80, "", 0, "OZPC", ALL),
        (Add, Byte, 0x1234_5601, 0xff02, ALL, 0x03, "P", ALL),
        (Add, Word, 0x7fff, 1, "", 0x8000, "OSAP", ALL),
        (Add, Word, 0xffff, 1, "", 0, "ZAPC", ALL),
        (Add, Dword, 0x7fff_ffff, 1, "", 0x8000_0000, "OSAP", ALL),
        (Add, Dword, 0xffff_ffff, 1, "", 0, "ZAPC", ALL),
        (Add, Qword, SIGN64 - 1, 1, "", SIGN64, "OSAP", ALL),
        (Add, Qword, u64::MAX, 1, "", 0, "ZAPC", ALL),
        (Adc, Byte, 0xff, 0, "C", 0, "ZAPC", ALL),
        (Adc, Byte, 0x7f, 0, "", 0x7f, "", ALL),
        (Adc, Dword, 0xffff_ffff, 0xffff_ffff, "C", 0xffff_ffff, "SAPC", ALL),
        (Adc, Qword, SIGN64 - 1, 0, "C", SIGN64, "OSAP", ALL),
        (Sub, Byte, 0x80, 1, "", 0x7f, "OA", ALL),
        (Sub, Byte, 0, 1, "", 0xff, "SAPC", ALL),
        (Sub, Dword, 5, 5, "OSAC", 0, "ZP", ALL),
        (Sub, Qword, 0, SIGN64, "", SIGN64, "OSPC", ALL),
        (Sbb, Word, 0, 0, "C", 0xffff, "SAPC", ALL),
        (Sbb, Byte, 0x80, 0x7f, "C", 0, "OZAP", ALL),
        (Cmp, Byte, 1, 2, "", 1, "SAPC", ALL),
        (Cmp, Qword, 5, 5, "", 5, "ZP", ALL),
        (And, Byte, 0xf0, 0x0f, "OC", 0, "ZP", NOT_AF),
        (Or, Qword, SIGN64, 1, "", SIGN64 | 1, "S", NOT_AF),
        (Xor, Dword, 0xdead_beef, 0xdead_beef, "OSC", 0, "ZP", NOT_AF),
        (Test, Word, 0x8001, 0x8000, "C", 0x8001, "SP", NOT_AF),
    ];
    for &(op, size, a, b, flags_in, result, out, compared) in rows {
        let got = binary(op, size, a, b, flags(flags_in) | OTHER_BITS);
        let context = format!("{op:?} {size:?} {a:#x}, {b:#x} [{flags_in}]");
        check(context, flags_in, got, result, out, compared);
    }
}

#[test]
fn unary_table() {
    const SIGN64: u64 = 1 << 63;
    #[rustfmt::skip]
    let rows: &[(UnaryOp, OpSize, u64, &str, u64, &str)] = &[
        (Inc, Byte, 0xff, "", 0, "ZAP"),
        (Inc, Byte, 0xff, "C", 0, "ZAPC"),
        (Inc, Byte, 0x7f, "", 0x80, "OSA"),
        (Inc, Word, 0xffff, "", 0, "ZAP"),
        (Inc, Dword, 0x7fff_ffff, "C", 0x8000_0000, "OSAPC"),
        (Inc, Qword, u64::MAX, "", 0, "ZAP"),
        (Dec, Byte, 0x80, "", 0x7f, "OA"),
        (Dec, Byte, 0, "C", 0xff, "SAPC"),
        (Dec, Qword, 1, "", 0, "ZP"),
        (Neg, Byte, 0, "C", 0, "ZP"),
        (Neg, Byte, 0x80, "", 0x80, "OSC"),
        (Neg, Byte, 1, "", 0xff, "SAPC"),
        (Neg, Word, 0x10, "", 0xfff0, "SPC"),
        (Neg, Qword, SIGN64, "", SIGN64, "OSPC"),
        (Not, Word, 0x00ff, ALL, 0xff00, ALL),
        (Not, Dword, 0x1234_5678_0000_ffff, "", 0xffff_0000, ""),
    ];
    for &(op, size, a, flags_in, result, out) in rows {
        let got = unary(op, size, a, flags(flags_in) | OTHER_BITS);
        let context = format!("{op:?} {size:?} {a:#x} [{flags_in}]");
        check(context, flags_in, got, result, out, ALL);
    }
}

#[test]
fn shift_table() {
    const SIGN64: u64 = 1 << 63;
    #[rustfmt::skip]
    let rows: &[ShiftRow] = &[
        // Counts 0, 1, width - 1, width, width + 1 and the masks' edges.
        (Shl, Byte, 0x81, 0, ALL, 0x81, ALL, ALL),
        (Shl, Byte, 0x81, 0, "", 0x81, "", ALL),
        (Shl, Byte, 0x81, 1, "", 0x02, "OC", NOT_AF),
        (Shl, Byte, 0x01, 7, "", 0x80, "S", SZPC),
        (Shl, Byte, 0x01, 8, "", 0, "ZP", "SZP"),
        (Shl, Byte, 0x01, 9, "", 0, "ZP", "SZP"),
        (Shl, Byte, 0x81, 32, ALL, 0x81, ALL, ALL),
        (Shl, Byte, 0x81, 33, "", 0x02, "OC", NOT_AF),
        (Shl, Word, 0x4000, 1, "", 0x8000, "OSP", NOT_AF),
        (Shl, Word, 1, 15, "", 0x8000, "SP", SZPC),
        (Shl, Word, 1, 16, "", 0, "ZP", "SZP"),
        (Shl, Word, 1, 17, "", 0, "ZP", "SZP"),
        (Shl, Dword, 1, 31, "", 0x8000_0000, "SP", SZPC),
        (Shl, Dword, 1, 32, "C", 1, "C", ALL),
        (Shl, Dword, 0x8000_0000, 33, "", 0, "OZPC", NOT_AF),
        (Shl, Qword, 1, 63, "", SIGN64, "SP", SZPC),
        (Shl, Qword, 1, 64, "", 1, "", ALL),
        (Shl, Qword, SIGN64, 65, "", 0, "OZPC", NOT_AF),
        (Shr, Byte, 0x81, 1, "", 0x40, "OC", NOT_AF),
        (Shr, Byte, 0x80, 7, "", 1, "", SZPC),
        (Shr, Byte, 0x80, 8, "", 0, "ZP", "SZP"),
        (Shr, Word, 0x8000, 15, "", 1, "", SZPC),
        (Shr, Dword, 3, 1, "", 1, "C", NOT_AF),
        (Shr, Dword, 0x8000_0000, 31, "", 1, "", SZPC),
        (Shr, Qword, u64::MAX, 63, "", 1, "C", SZPC),
        (Shr, Qword, u64::MAX, 64, "Z", u64::MAX, "Z", ALL),
        (Sar, Byte, 0x81, 1, "O", 0xc0, "SPC", NOT_AF),
        (Sar, Byte, 0x80, 7, "", 0xff, "SP", SZPC),
        (Sar, Byte, 0x80, 8, "", 0xff, "SP", "SZP"),
        (Sar, Byte, 0x40, 31, "", 0, "ZP", "SZP"),
        (Sar, Word, 0x8000, 16, "", 0xffff, "SP", "SZP"),
        (Sar, Dword, 0x8000_0000, 31, "", 0xffff_ffff, "SP", SZPC),
        (Sar, Qword, SIGN64, 63, "", u64::MAX, "SP", SZPC),
        (Sar, Qword, SIGN64, 64, "", SIGN64, "", ALL),
        // Rotates write only CF and OF.
        (Rol, Byte, 0x81, 1, "", 0x03, "OC", ALL),
        (Rol, Byte, 0x81, 1, "SZAP", 0x03, ALL, ALL),
        (Rol, Byte, 0x81, 8, "Z", 0x81, "ZC", NOT_OF),
        (Rol, Byte, 0x81, 9, "", 0x03, "OC", ALL),
        (Rol, Word, 0x8001, 4, "", 0x0018, "", NOT_OF),
        (Rol, Dword, 0x8000_0000, 1, "", 1, "OC", ALL),
        (Rol, Dword, 0x8000_0000, 32, "", 0x8000_0000, "", ALL),
        (Rol, Qword, SIGN64, 65, "", 1, "OC", ALL),
        (Ror, Byte, 0x01, 1, "", 0x80, "OC", ALL),
        (Ror, Byte, 0x02, 1, "", 0x01, "", ALL),
        (Ror, Word, 0x0001, 16, "", 0x0001, "", NOT_OF),
        (Ror, Qword, 1, 63, "", 2, "", NOT_OF),
        (Ror, Qword, 1, 64, "C", 1, "C", ALL),
        // Through CF: 9 and 17 bits wide at 8 and 16 bits, counts taken modulo those.
        (Rcl, Byte, 0x80, 1, "Z", 0, "OZC", ALL),
        (Rcl, Byte, 0x01, 9, "", 0x01, "", NOT_OF),
        (Rcl, Byte, 0x01, 10, "C", 0x03, "", NOT_OF),
        (Rcl, Byte, 0x01, 17, "", 0, "C", NOT_OF),
        (Rcl, Byte, 0x01, 18, "C", 0x01, "C", NOT_OF),
        (Rcl, Word, 0x0001, 17, "", 0x0001, "", NOT_OF),
        (Rcl, Word, 0x0001, 18, "C", 0x0003, "", NOT_OF),
        (Rcl, Word, 0x8000, 31, "", 0x1000, "", NOT_OF),
        (Rcl, Dword, 0x8000_0000, 1, "", 0, "OC", ALL),
        (Rcl, Dword, 1, 31, "C", 0xc000_0000, "", NOT_OF),
        (Rcl, Dword, 1, 32, "C", 1, "C", ALL),
        (Rcl, Qword, SIGN64, 1, "", 0, "OC", ALL),
        (Rcl, Qword, 1, 64, "", 1, "", ALL),
        (Rcr, Byte, 0x01, 1, "", 0, "C", ALL),
        (Rcr, Byte, 0x01, 1, "C", 0x80, "OC", ALL),
        (Rcr, Byte, 0x01, 9, "", 0x01, "", NOT_OF),
        (Rcr, Byte, 0x02, 10, "C", 0x81, "", NOT_OF),
        (Rcr, Word, 0x0001, 17, "C", 0x0001, "C", NOT_OF),
        (Rcr, Word, 0x0001, 18, "", 0, "C", NOT_OF),
        (Rcr, Dword, 1, 33, "", 0, "C", ALL),
        (Rcr, Qword, SIGN64, 1, "", SIGN64 >> 1, "O", ALL),
        (Rcr, Qword, 1, 64, "C", 1, "C", ALL),
    ];
    for &(op, size, a, count, flags_in, result, out, compared) in rows {
        let got = shift(op, size, a, count, flags(flags_in) | OTHER_BITS);
        let context = format!("{op:?} {size:?} {a:#x}, {count} [{flags_in}]");
        check(context, flags_in, got, result, out, compared);
    }
}

#[test]
fn double_shift_table() {
    type DoubleShift = fn(OpSize, u64, u64, u8, u64) -> (u64, u64);
    let (shld, shrd): (DoubleShift, DoubleShift) = (alu::shld, alu::shrd);
    /// name, function, size, dst, src, count, flags in, result, flags out, flags compared
    type DoubleShiftRow = (
        &'static str,
        DoubleShift,
        OpSize,
        u64,
        u64,
        u8,
        &'static str,
        u64,
        &'static str,
        &'static str,
    );
    const DST: u64 = 0x0123_4567_89ab_cdef;
    const SRC: u64 = 0xfedc_ba98_7654_3210;
    #[rustfmt::skip]
    let rows: &[DoubleShiftRow] = &[
        ("SHLD", shld, Word, 0x1234, 0x5678, 4, "", 0x2345, "C", SZPC),
        ("SHLD", shld, Dword, 0x8000_0000, 0, 1, "", 0, "OZPC", NOT_AF),
        ("SHLD", shld, Dword, 0x1234_5678, 0x9abc_def0, 0, ALL, 0x1234_5678, ALL, ALL),
        ("SHLD", shld, Dword, 0x1234_5678, 0x9abc_def0, 8, "", 0x3456_789a, "P", SZPC),
        ("SHLD", shld, Dword, 0x1234_5678, 0x9abc_def0, 32, "", 0x1234_5678, "", ALL),
        ("SHLD", shld, Qword, 1, 1 << 63, 1, "", 3, "P", NOT_AF),
        ("SHLD", shld, Qword, DST, SRC, 16, "", 0x4567_89ab_cdef_fedc, "C", SZPC),
        ("SHLD", shld, Qword, DST, SRC, 64, "Z", DST, "Z", ALL),
        ("SHRD", shrd, Word, 0x1234, 0x5678, 4, "", 0x8123, "S", SZPC),
        ("SHRD", shrd, Word, 0x1234, 0x5678, 16, "", 0x5678, "P", SZPC),
        ("SHRD", shrd, Dword, 1, 1, 1, "", 0x8000_0000, "OSPC", NOT_AF),
        ("SHRD", shrd, Qword, 1 << 63, 0, 63, "", 1, "", SZPC),
    ];
    for &(name, function, size, dst, src, count, flags_in, result, out, compared) in rows {
        let got = function(size, dst, src, count, flags(flags_in) | OTHER_BITS);
        let context = format!("{name} {size:?} {dst:#x}, {src:#x}, {count} [{flags_in}]");
        check(context, flags_in, got, result, out, compared);
    }
}

#[test]
fn multiply_table() {
    type Widening = fn(OpSize, u64, u64, u64) -> (Wide, u64);
    let (mul, imul): (Widening, Widening) = (alu::mul, alu::imul_wide);
    /// name, function, size, a, b, lo, hi, flags out
    type WideningRow = (
        &'static str,
        Widening,
        OpSize,
        u64,
        u64,
        u64,
        u64,
        &'static str,
    );
    const MIN64: u64 = 1 << 63;
    #[rustfmt::skip]
    let rows: &[WideningRow] = &[
        ("MUL", mul, Byte, 0x10, 0x10, 0x100, 0, "OC"),
        ("MUL", mul, Byte, 0x0f, 0x11, 0xff, 0, ""),
        ("MUL", mul, Byte, 0xabcd_00ff, 0x1ff, 0xfe01, 0, "OC"),
        ("MUL", mul, Word, 0xffff, 0xffff, 0x0001, 0xfffe, "OC"),
        ("MUL", mul, Word, 0x100, 0xff, 0xff00, 0, ""),
        ("MUL", mul, Dword, 0xffff_ffff, 0xffff_ffff, 1, 0xffff_fffe, "OC"),
        ("MUL", mul, Qword, u64::MAX, u64::MAX, 1, u64::MAX - 1, "OC"),
        ("MUL", mul, Qword, 3, 5, 15, 0, ""),
        ("IMUL", imul, Byte, 0xff, 0xff, 1, 0, ""),
        ("IMUL", imul, Byte, 0x80, 0xff, 0x0080, 0, "OC"),
        ("IMUL", imul, Byte, 0x80, 0x01, 0xff80, 0, ""),
        ("IMUL", imul, Word, 0x8000, 0x8000, 0, 0x4000, "OC"),
        ("IMUL", imul, Dword, 0xffff_ffff, 2, 0xffff_fffe, 0xffff_ffff, ""),
        ("IMUL", imul, Qword, MIN64, u64::MAX, MIN64, 0, "OC"),
    ];
    for &(name, function, size, a, b, lo, hi, out) in rows {
        let (product, got_flags) = function(size, a, b, OTHER_BITS);
        let context = format!("{name} {size:?} {a:#x} * {b:#x}");
        assert_eq!(product, Wide { lo, hi }, "{context}");
        assert_flags(&context, OTHER_BITS, got_flags, flags(out), flags("OC"));
    }
    #[rustfmt::skip]
    let rows: &[(OpSize, u64, u64, u64, &str)] = &[
        (Word, 0x100, 0x100, 0, "OC"),
        (Word, 0xffff, 0x8000, 0x8000, "OC"),
        (Dword, 0xffff_fffe, 3, 0xffff_fffa, ""),
        (Qword, MIN64 - 1, 2, u64::MAX - 1, "OC"),
    ];
    for &(size, a, b, result, out) in rows {
        let got = alu::imul(size, a, b, OTHER_BITS);
        check(
            format!("IMUL {size:?} {a:#x}, {b:#x}"),
            "",
            got,
            result,
            out,
            "OC",
        );
    }
}

#[test]
fn divide_table() {
    type Divide = fn(OpSize, u64, u64, u64, u64) -> Result<(u64, u64, u64), alu::DivideError>;
    let (div, idiv): (Divide, Divide) = (alu::div, alu::idiv);
    /// name, function, size, hi, lo, divisor, quotient, remainder
    type DivideRow = (&'static str, Divide, OpSize, u64, u64, u64, u64, u64);
    const MIN64: u64 = 1 << 63;
    #[rustfmt::skip]
    let rows: &[DivideRow] = &[
        ("DIV", div, Byte, 0xdead, 0x0100, 2, 0x80, 0),
        ("DIV", div, Byte, 0, 0xabcd_00ff, 0x10, 0x0f, 0x0f),
        ("DIV", div, Word, 1, 0, 0x10, 0x1000, 0),
        ("DIV", div, Dword, 1, 0, 2, 0x8000_0000, 0),
        ("DIV", div, Qword, 1, 0, 2, MIN64, 0),
        ("DIV", div, Qword, 0, 100, 7, 14, 2),
        ("DIV", div, Qword, 7, u64::MAX, 8, u64::MAX, 7),
        ("IDIV", idiv, Byte, 0, 0xfff9, 2, 0xfd, 0xff),
        ("IDIV", idiv, Byte, 0, 0xff00, 2, 0x80, 0),
        ("IDIV", idiv, Word, 0xffff, 0xfff9, 2, 0xfffd, 0xffff),
        ("IDIV", idiv, Word, 0, 7, 0xfffe, 0xfffd, 1),
        ("IDIV", idiv, Dword, 0xffff_ffff, 0x8000_0000, 1, 0x8000_0000, 0),
        ("IDIV", idiv, Qword, u64::MAX, -7i64 as u64, -2i64 as u64, 3, u64::MAX),
        ("IDIV", idiv, Qword, 0, MIN64 - 1, u64::MAX, MIN64 + 1, 0),
    ];
    for &(name, function, size, hi, lo, divisor, quotient, remainder) in rows {
        let context = format!("{name} {size:?} {hi:#x}:{lo:#x} / {divisor:#x}");
        let (got_quotient, got_remainder, got_flags) = function(size, hi, lo, divisor, OTHER_BITS)
            .unwrap_or_else(|error| panic!("{context}: {error}"));
        assert_eq!(
            (got_quotient, got_remainder),
            (quotient, remainder),
            "{context}"
        );
        assert_flags(&context, OTHER_BITS, got_flags, 0, 0);
    }
}

#[test]
fn bit_test_table() {
    use BitTestOp::*;
    #[rustfmt::skip]
    let rows: &[(BitTestOp, OpSize, u64, u64, u64, &str)] = &[
        (Bt, Dword, 0x81, 7, 0x81, "C"),
        (Bt, Word, 1, 16, 1, "C"),
        (Bts, Word, 0, 15, 0x8000, ""),
        (Btr, Qword, u64::MAX, 63, u64::MAX >> 1, "C"),
        (Btc, Dword, 0, 35, 0x8, ""),
        (Btc, Qword, 0x8, 67, 0, "C"),
    ];
    for &(op, size, value, bit, result, out) in rows {
        let got = alu::bit_test(op, size, value, bit, OTHER_BITS);
        check(
            format!("{op:?} {size:?} {value:#x}, {bit}"),
            "",
            got,
            result,
            out,
            "C",
        );
    }
}

#[test]
fn bit_scan_and_count_table() {
    type Scan = fn(OpSize, u64, u64, u64) -> (u64, u64);
    let (bsf, bsr): (Scan, Scan) = (alu::bsf, alu::bsr);
    const OLD: u64 = 0xdead_beef_cafe_f00d;
    #[rustfmt::skip]
    let rows: &[(&str, Scan, OpSize, u64, u64)] = &[
        ("BSF", bsf, Word, 0x8000, 0xdead_beef_cafe_000f),
        ("BSF", bsf, Dword, 0x1_0000_0100, 8),
        ("BSF", bsf, Qword, 1 << 63, 63),
        ("BSR", bsr, Word, 0x00ff_8001, 0xdead_beef_cafe_000f),
        ("BSR", bsr, Dword, 1, 0),
        ("BSR", bsr, Qword, u64::MAX, 63),
    ];
    for &(name, function, size, src, register) in rows {
        let got = function(size, src, OLD, OTHER_BITS);
        check(
            format!("{name} {size:?} {src:#x}"),
            "",
            got,
            register,
            "",
            "Z",
        );
    }
    for size in [Word, Dword, Qword] {
        for (name, function) in [("BSF", bsf), ("BSR", bsr)] {
            let (_, got_flags) = function(size, 0, OLD, OTHER_BITS);
            assert_flags(
                &format!("{name} {size:?} 0"),
                OTHER_BITS,
                got_flags,
                flags("Z"),
                flags("Z"),
            );
        }
    }

    type Count = fn(OpSize, u64, u64) -> (u64, u64);
    let (tzcnt, lzcnt, popcnt): (Count, Count, Count) = (alu::tzcnt, alu::lzcnt, alu::popcnt);
    #[rustfmt::skip]
    let rows: &[(&str, Count, OpSize, u64, u64, &str)] = &[
        ("TZCNT", tzcnt, Word, 0, 16, "C"),
        ("TZCNT", tzcnt, Word, 0x1_0000, 16, "C"),
        ("TZCNT", tzcnt, Dword, 1, 0, "Z"),
        ("TZCNT", tzcnt, Dword, 0, 32, "C"),
        ("TZCNT", tzcnt, Qword, 1 << 63, 63, ""),
        ("TZCNT", tzcnt, Qword, 0, 64, "C"),
        ("LZCNT", lzcnt, Word, 0, 16, "C"),
        ("LZCNT", lzcnt, Word, 0x8000, 0, "Z"),
        ("LZCNT", lzcnt, Dword, 0xffff_0001, 0, "Z"),
        ("LZCNT", lzcnt, Dword, 1, 31, ""),
        ("LZCNT", lzcnt, Qword, 1, 63, ""),
        ("LZCNT", lzcnt, Qword, 0, 64, "C"),
        ("POPCNT", popcnt, Word, 0xffff, 16, ""),
        ("POPCNT", popcnt, Word, 0x1_0000, 0, "Z"),
        ("POPCNT", popcnt, Dword, 0, 0, "Z"),
        ("POPCNT", popcnt, Qword, u64::MAX, 64, ""),
    ];
    for &(name, function, size, src, result, out) in rows {
        let got = function(size, src, flags(ALL) | OTHER_BITS);
        // OF, SF, AF and PF are undefined after TZCNT and LZCNT: they follow the host.
        let compared = if name == "POPCNT" { ALL } else { "ZC" };
        check(
            format!("{name} {size:?} {src:#x}"),
            ALL,
            got,
            result,
            out,
            compared,
        );
    }
}

#[test]
fn byte_swaps() {
    assert_eq!(alu::bswap(Dword, 0x1122_3344_5566_7788), 0x8877_6655);
    assert_eq!(
        alu::bswap(Qword, 0x0102_0304_0506_0708),
        0x0807_0605_0403_0201
    );
    // Undefined in the SDM; the host's answer (zero on AMD and Intel processors alike).
    assert_eq!(alu::bswap(Word, 0xabcd_1234), 0);
    assert_eq!(alu::movbe(Word, 0xabcd_1234), 0x3412);
    assert_eq!(alu::movbe(Dword, 0x1122_3344_5566_7788), 0x8877_6655);
    assert_eq!(
        alu::movbe(Qword, 0x0102_0304_0506_0708),
        0x0807_0605_0403_0201
    );
}

#[test]
fn operand_sizes() {
    let expected = [(1, 8, 0xff, 0x80), (2, 16, 0xffff, 0x8000)];
    for (size, (bytes, bits, mask, sign)) in SIZES.into_iter().zip(expected) {
        assert_eq!(
            (size.bytes(), size.bits(), size.mask(), size.sign_bit()),
            (bytes, bits, mask, sign)
        );
    }
    assert_eq!(Qword.mask(), u64::MAX);
    assert_eq!(Qword.sign_bit(), 1 << 63);
    assert_eq!(Dword.mask(), 0xffff_ffff);
    for size in SIZES {
        assert_eq!(OpSize::from_bytes(size.bytes()), Some(size));
    }
    assert_eq!(OpSize::from_bytes(3), None);
    assert_eq!(OpSize::from_bytes(16), None);
}

#[test]
fn this_host_is_supported() {
    assert!(alu::host_supported());
}

#[test]
#[should_panic(expected = "no 8-bit form")]
fn no_byte_double_shift() {
    alu::shld(Byte, 1, 2, 3, 0);
}
