//! The instructions every x86-64 CPU has, run on the host with the guest's flags loaded.

use super::{AF, CF, OF, OpSize, PF, SF, ZF, merge_arith};

/// The guest's arithmetic flags as the host loads them: the AH image for SAHF (RFLAGS' low byte
/// already has SF, ZF, AF, PF and CF where SAHF takes them), in RAX, and a byte that overflows
/// when added to itself exactly when OF is set (0x40 + 0x40), since SAHF does not load OF.
#[inline(always)]
pub(super) fn sahf_image(rflags: u64) -> (u64, u8) {
    ((rflags & 0xff) << 8, ((rflags & OF) >> 5) as u8)
}

/// The host's arithmetic flags from LAHF's AH (in RAX) and SETO's byte.
#[inline(always)]
pub(super) fn from_lahf(rax: u64, overflow: u8) -> u64 {
    ((rax >> 8) & (SF | ZF | AF | PF | CF)) | (u64::from(overflow) << 11)
}

/// Runs the instruction templates `$insn` on the host with the guest's arithmetic flags loaded:
/// `$flags` (a `u64` variable) goes in as the guest's RFLAGS and comes out as the host's
/// arithmetic flags after the instructions. `$operands` are the instructions' asm! operands,
/// without a trailing comma; RAX is taken (for AH), so an instruction that works on the
/// accumulator moves its operand in and out itself.
///
/// The load is `add o, o; sahf` and the read-back `lahf; seto o`: four simple instructions, a
/// few times faster than `push; popfq` and `pushfq; pop` (POPF is microcoded), and with no
/// memory or stack access at all. They need LAHF and SAHF in 64-bit mode: a host without them
/// would take a SIGILL at the first use, which [`super::host_supported`] lets a machine refuse
/// up front.
macro_rules! with_guest_flags {
    ($flags:ident, [$($insn:expr),+ $(,)?], $($operands:tt)*) => {{
        let (mut rax, mut overflow) = $crate::interp::alu::native::sahf_image($flags);
        // SAFETY: the instructions work on registers only: no memory and no stack (`nomem`,
        // `nostack`). Every register they write is an operand: RAX (AH for SAHF and LAHF, and
        // the accumulator of MUL and DIV), the overflow byte and the instruction's own
        // operands. SAHF, ADD, SETO and the arithmetic change only the status flags, which
        // asm! treats as clobbered; DF and the other control flags are left as they are. The
        // only instruction here that can fault, DIV/IDIV, runs only after `muldiv` ruled #DE
        // out.
        unsafe {
            ::core::arch::asm!(
                "add {overflow}, {overflow}",
                "sahf",
                $($insn,)+
                "lahf",
                "seto {overflow}",
                overflow = inout(reg_byte) overflow,
                $($operands)*,
                inout("rax") rax,
                options(nomem, nostack),
            );
        }
        $flags = $crate::interp::alu::native::from_lahf(rax, overflow);
    }};
}
pub(super) use with_guest_flags;

/// Runs an instruction on the host at `$size`, with its template from `$form`: a macro from a
/// register-width modifier (`":l"`, `":x"`, `":e"` or `""`) to the template. The `wide` form is
/// for instructions without an 8-bit encoding (SHLD, two-operand IMUL, BT, BSF, ...), which
/// panics on [`OpSize::Byte`] with `$name`: a decoder never produces such an instruction.
macro_rules! sized {
    ($size:expr, $form:ident, $flags:ident, $($operands:tt)*) => {
        match $size {
            OpSize::Byte => with_guest_flags!($flags, [$form!(":l")], $($operands)*),
            OpSize::Word => with_guest_flags!($flags, [$form!(":x")], $($operands)*),
            OpSize::Dword => with_guest_flags!($flags, [$form!(":e")], $($operands)*),
            OpSize::Qword => with_guest_flags!($flags, [$form!("")], $($operands)*),
        }
    };
    (wide $name:literal, $size:expr, $form:ident, $flags:ident, $($operands:tt)*) => {
        match $size {
            OpSize::Byte => panic!(concat!($name, " has no 8-bit form")),
            OpSize::Word => with_guest_flags!($flags, [$form!(":x")], $($operands)*),
            OpSize::Dword => with_guest_flags!($flags, [$form!(":e")], $($operands)*),
            OpSize::Qword => with_guest_flags!($flags, [$form!("")], $($operands)*),
        }
    };
}
pub(super) use sized;

/// The two-operand ALU instructions of opcodes 0x00-0x3f and 0x84/0x85.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// ADD: `a + b`.
    Add,
    /// OR: `a | b`.
    Or,
    /// ADC: `a + b + CF`.
    Adc,
    /// SBB: `a - b - CF`.
    Sbb,
    /// AND: `a & b`.
    And,
    /// SUB: `a - b`.
    Sub,
    /// XOR: `a ^ b`.
    Xor,
    /// CMP: the flags of SUB; writes no destination.
    Cmp,
    /// TEST: the flags of AND; writes no destination.
    Test,
}

/// `a op b` at `size`: the result (masked to `size`) and the new RFLAGS.
///
/// For [`BinaryOp::Cmp`] and [`BinaryOp::Test`], which write no destination, the result is `a`
/// unchanged, so a caller may store it or not.
#[inline]
pub fn binary(op: BinaryOp, size: OpSize, a: u64, b: u64, rflags: u64) -> (u64, u64) {
    let mut result = a;
    let mut flags = rflags;
    macro_rules! run {
        ($mnemonic:literal) => {{
            macro_rules! form {
                ($w:literal) => {
                    concat!($mnemonic, " {d", $w, "}, {s", $w, "}")
                };
            }
            sized!(size, form, flags, d = inout(reg) result, s = in(reg) b)
        }};
    }
    match op {
        BinaryOp::Add => run!("add"),
        BinaryOp::Or => run!("or"),
        BinaryOp::Adc => run!("adc"),
        BinaryOp::Sbb => run!("sbb"),
        BinaryOp::And => run!("and"),
        BinaryOp::Sub => run!("sub"),
        BinaryOp::Xor => run!("xor"),
        BinaryOp::Cmp => run!("cmp"),
        BinaryOp::Test => run!("test"),
    }
    (result & size.mask(), merge_arith(rflags, flags))
}

/// The one-operand instructions of groups 3, 4 and 5 that compute a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// INC: `a + 1`, CF unchanged.
    Inc,
    /// DEC: `a - 1`, CF unchanged.
    Dec,
    /// NEG: `0 - a`.
    Neg,
    /// NOT: `!a`, no flag changed.
    Not,
}

/// `op a` at `size`: the result (masked to `size`) and the new RFLAGS.
#[inline]
pub fn unary(op: UnaryOp, size: OpSize, a: u64, rflags: u64) -> (u64, u64) {
    let mut result = a;
    let mut flags = rflags;
    macro_rules! run {
        ($mnemonic:literal) => {{
            macro_rules! form {
                ($w:literal) => {
                    concat!($mnemonic, " {d", $w, "}")
                };
            }
            sized!(size, form, flags, d = inout(reg) result)
        }};
    }
    match op {
        UnaryOp::Inc => run!("inc"),
        UnaryOp::Dec => run!("dec"),
        UnaryOp::Neg => run!("neg"),
        // NOT writes no flag at all, so there is nothing for the host to tell us.
        UnaryOp::Not => return (!a & size.mask(), rflags),
    }
    (result & size.mask(), merge_arith(rflags, flags))
}

/// The shifts and rotates of group 2 (SAL is SHL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShiftOp {
    /// ROL: rotate left.
    Rol,
    /// ROR: rotate right.
    Ror,
    /// RCL: rotate left through CF.
    Rcl,
    /// RCR: rotate right through CF.
    Rcr,
    /// SHL (and SAL): shift left.
    Shl,
    /// SHR: logical shift right.
    Shr,
    /// SAR: arithmetic shift right.
    Sar,
}

/// `a` shifted or rotated by `count` at `size`: the result (masked to `size`) and the new
/// RFLAGS.
///
/// `count` is the raw count operand (CL, an immediate, or 1): the host masks it to 5 bits (6
/// for 64-bit operands) and reduces RCL/RCR counts modulo 9 or 17 at 8 and 16 bits, exactly as
/// the guest's CPU does, and a masked count of zero leaves every flag as it was.
#[inline]
pub fn shift(op: ShiftOp, size: OpSize, a: u64, count: u8, rflags: u64) -> (u64, u64) {
    let mut result = a;
    let mut flags = rflags;
    macro_rules! run {
        ($mnemonic:literal) => {{
            macro_rules! form {
                ($w:literal) => {
                    concat!($mnemonic, " {d", $w, "}, cl")
                };
            }
            sized!(size, form, flags, d = inout(reg) result, in("cl") count)
        }};
    }
    match op {
        ShiftOp::Rol => run!("rol"),
        ShiftOp::Ror => run!("ror"),
        ShiftOp::Rcl => run!("rcl"),
        ShiftOp::Rcr => run!("rcr"),
        ShiftOp::Shl => run!("shl"),
        ShiftOp::Shr => run!("shr"),
        ShiftOp::Sar => run!("sar"),
    }
    (result & size.mask(), merge_arith(rflags, flags))
}

/// Runs the double-precision shift `$mnemonic` (SHLD or SHRD); there is no 8-bit form.
macro_rules! double_shift {
    ($mnemonic:literal, $size:expr, $dst:expr, $src:expr, $count:expr, $rflags:expr) => {{
        let mut result = $dst;
        let mut flags = $rflags;
        macro_rules! form {
            ($w:literal) => {
                concat!($mnemonic, " {d", $w, "}, {s", $w, "}, cl")
            };
        }
        sized!(wide $mnemonic, $size, form, flags, d = inout(reg) result, s = in(reg) $src,
            in("cl") $count);
        (result & $size.mask(), merge_arith($rflags, flags))
    }};
}

/// SHLD: `dst` shifted left by `count`, filled from the top of `src`, at `size`; the result
/// (masked to `size`) and the new RFLAGS.
///
/// `count` is the raw count operand, masked by the host as in [`shift`]. A 16-bit count above
/// 16 is undefined in the SDM; the host's answer is returned.
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: SHLD has no 8-bit form, so a decoder never produces one.
#[inline]
pub fn shld(size: OpSize, dst: u64, src: u64, count: u8, rflags: u64) -> (u64, u64) {
    double_shift!("shld", size, dst, src, count, rflags)
}

/// SHRD: `dst` shifted right by `count`, filled from the bottom of `src`, at `size`; the result
/// (masked to `size`) and the new RFLAGS.
///
/// `count` is the raw count operand, masked by the host as in [`shift`].
///
/// # Panics
///
/// If `size` is [`OpSize::Byte`]: SHRD has no 8-bit form.
#[inline]
pub fn shrd(size: OpSize, dst: u64, src: u64, count: u8, rflags: u64) -> (u64, u64) {
    double_shift!("shrd", size, dst, src, count, rflags)
}
