//! SSE and MMX operations run by the host's own instructions.
//!
//! Each operation is the one host instruction the guest's is, on host registers holding the
//! guest's values: XMM operands in XMM registers, MMX operands in MM0 and MM1 (followed by
//! EMMS, as the Rust ABI wants the x87 stack empty), integers in general registers. An
//! instruction with an immediate is instantiated once per immediate value (const generics)
//! and picked from a table of 256.
//!
//! # MXCSR
//!
//! Floating-point operations run with the guest's rounding mode, DAZ and FTZ, but with every
//! exception masked and no flag set: MXCSR is loaded with `(guest & !FLAGS) | MASKS` before
//! the instruction and read back after it, then the host's own MXCSR is restored. The flags
//! read back are those this instruction raised, with the masked response already in the
//! result; what the guest's masks make of them is the interpreter's business (`exec::sse`).
//! The host never takes a SIMD floating-point exception.
//!
//! # Host requirement
//!
//! The instructions of every extension used here (SSE3, SSSE3, SSE4.1, SSE4.2): the
//! interpreter advertises an extension only when the host has it, and runs no instruction of
//! an extension it does not advertise.
//!
//! # Cost
//!
//! An integer operation is the instruction and two register moves. A floating-point one adds
//! STMXCSR, LDMXCSR, STMXCSR, LDMXCSR: about 30 cycles. No allocation, no branch besides the
//! table lookup.

use core::arch::asm;
use core::arch::x86_64::__m128i;

use iced_x86::Mnemonic;

use super::mxcsr;
use crate::interp::alu::ARITH_FLAGS;

/// An XMM value as asm! passes it.
#[inline(always)]
fn vector(value: u128) -> __m128i {
    // SAFETY: both types are 16 bytes of plain data; every bit pattern is valid for either.
    unsafe { core::mem::transmute::<u128, __m128i>(value) }
}

/// The bits of an XMM value.
#[inline(always)]
fn bits(value: __m128i) -> u128 {
    // SAFETY: as in `vector`.
    unsafe { core::mem::transmute::<__m128i, u128>(value) }
}

/// MXCSR as a floating-point operation runs with it: the guest's control bits, every
/// exception masked, no flag set.
#[inline(always)]
fn masked(control: u32) -> u32 {
    (control & !mxcsr::FLAGS) | mxcsr::MASKS
}

/// Runs `$insn` with MXCSR `masked($control)` loaded, restoring the host's after; evaluates to
/// the exception flags the instructions raised. `$operands` are the instructions' asm!
/// operands, each followed by a comma.
macro_rules! with_mxcsr {
    ($control:expr, [$($insn:expr),+ $(,)?], $($operands:tt)*) => {{
        let mut csr = masked($control);
        let mut host = 0u32;
        // SAFETY: STMXCSR and LDMXCSR access the two local u32s the pointers name. The MXCSR
        // loaded has only bits the guest may set (checked when the guest loads it) plus every
        // mask, so LDMXCSR cannot fault and the instruction raises no exception; the host's
        // MXCSR is back before the block ends. The instruction touches only its operands (and
        // EFLAGS, where `preserves_flags` is not given).
        unsafe {
            asm!(
                "stmxcsr dword ptr [{host}]",
                "ldmxcsr dword ptr [{csr}]",
                $($insn,)+
                "stmxcsr dword ptr [{csr}]",
                "ldmxcsr dword ptr [{host}]",
                host = in(reg) &raw mut host,
                csr = in(reg) &raw mut csr,
                $($operands)*
            );
        }
        csr & mxcsr::FLAGS
    }};
}

/// An operation on XMM values without MXCSR: `dst = op(dst, src)`.
pub(crate) type XmmOp = fn(u128, u128) -> u128;

/// An operation on MMX values: `dst = op(dst, src)`.
pub(crate) type MmxOp = fn(u64, u64) -> u64;

/// A floating-point operation: `(dst, raised) = op(dst, src, mxcsr)`.
pub(crate) type FloatOp = fn(u128, u128, u32) -> (u128, u32);

/// A comparison that sets RFLAGS: `(arithmetic flags, raised) = op(a, b, mxcsr)`.
pub(crate) type CompareOp = fn(u128, u128, u32) -> (u64, u32);

/// 256 instances of an operation, by immediate: `table[imm >> 4][imm & 15]`.
pub(crate) type ByImmediate<T> = [[T; 16]; 16];

/// The instance of `table` for immediate `imm`.
pub(crate) fn at<T: Copy>(table: &ByImmediate<T>, imm: u8) -> T {
    table[usize::from(imm >> 4)][usize::from(imm & 15)]
}

/// One row of [`ByImmediate`]: `$f::<row..row + 16>`.
macro_rules! imm_row {
    ($f:ident, $row:literal) => {
        [
            $f::<{ $row }>,
            $f::<{ $row + 1 }>,
            $f::<{ $row + 2 }>,
            $f::<{ $row + 3 }>,
            $f::<{ $row + 4 }>,
            $f::<{ $row + 5 }>,
            $f::<{ $row + 6 }>,
            $f::<{ $row + 7 }>,
            $f::<{ $row + 8 }>,
            $f::<{ $row + 9 }>,
            $f::<{ $row + 10 }>,
            $f::<{ $row + 11 }>,
            $f::<{ $row + 12 }>,
            $f::<{ $row + 13 }>,
            $f::<{ $row + 14 }>,
            $f::<{ $row + 15 }>,
        ]
    };
}

/// The 256 instances of `$f::<IMM>`, as a [`ByImmediate`].
macro_rules! by_immediate {
    ($f:ident) => {
        [
            imm_row!($f, 0),
            imm_row!($f, 16),
            imm_row!($f, 32),
            imm_row!($f, 48),
            imm_row!($f, 64),
            imm_row!($f, 80),
            imm_row!($f, 96),
            imm_row!($f, 112),
            imm_row!($f, 128),
            imm_row!($f, 144),
            imm_row!($f, 160),
            imm_row!($f, 176),
            imm_row!($f, 192),
            imm_row!($f, 208),
            imm_row!($f, 224),
            imm_row!($f, 240),
        ]
    };
}

/// The integer operations with both an MMX and an XMM form (MMX, SSE, SSE2 and SSSE3).
macro_rules! both_forms {
    ($m:ident) => {
        $m! {
            Punpcklbw => "punpcklbw", Punpcklwd => "punpcklwd", Punpckldq => "punpckldq",
            Punpckhbw => "punpckhbw", Punpckhwd => "punpckhwd", Punpckhdq => "punpckhdq",
            Packsswb => "packsswb", Packssdw => "packssdw", Packuswb => "packuswb",
            Pcmpgtb => "pcmpgtb", Pcmpgtw => "pcmpgtw", Pcmpgtd => "pcmpgtd",
            Pcmpeqb => "pcmpeqb", Pcmpeqw => "pcmpeqw", Pcmpeqd => "pcmpeqd",
            Psrlw => "psrlw", Psrld => "psrld", Psrlq => "psrlq", Psraw => "psraw",
            Psrad => "psrad", Psllw => "psllw", Pslld => "pslld", Psllq => "psllq",
            Paddb => "paddb", Paddw => "paddw", Paddd => "paddd", Paddq => "paddq",
            Psubb => "psubb", Psubw => "psubw", Psubd => "psubd", Psubq => "psubq",
            Paddsb => "paddsb", Paddsw => "paddsw", Paddusb => "paddusb", Paddusw => "paddusw",
            Psubsb => "psubsb", Psubsw => "psubsw", Psubusb => "psubusb", Psubusw => "psubusw",
            Pmullw => "pmullw", Pmulhw => "pmulhw", Pmulhuw => "pmulhuw", Pmuludq => "pmuludq",
            Pmaddwd => "pmaddwd", Pand => "pand", Pandn => "pandn", Por => "por", Pxor => "pxor",
            Pavgb => "pavgb", Pavgw => "pavgw", Pminub => "pminub", Pmaxub => "pmaxub",
            Pminsw => "pminsw", Pmaxsw => "pmaxsw", Psadbw => "psadbw",
            Pshufb => "pshufb", Phaddw => "phaddw", Phaddd => "phaddd", Phaddsw => "phaddsw",
            Phsubw => "phsubw", Phsubd => "phsubd", Phsubsw => "phsubsw",
            Pmaddubsw => "pmaddubsw", Pmulhrsw => "pmulhrsw", Psignb => "psignb",
            Psignw => "psignw", Psignd => "psignd", Pabsb => "pabsb", Pabsw => "pabsw",
            Pabsd => "pabsd",
        }
    };
}

/// Defines `xmm_op`, the XMM forms of `both_forms!` and of the operations listed.
macro_rules! define_xmm_op {
    (@ $($mnemonic:ident => $insn:literal,)*) => {
        /// The host's packed-integer, logical and data-movement instruction `mnemonic` on XMM
        /// registers, if it is one of those run natively: `dst = op(dst, src)`. A memory
        /// source is passed zero-extended; the instructions read only its width.
        pub(crate) fn xmm_op(mnemonic: Mnemonic) -> Option<XmmOp> {
            Some(match mnemonic {
                $(Mnemonic::$mnemonic => {
                    fn op(a: u128, b: u128) -> u128 {
                        let mut a = vector(a);
                        // SAFETY: one SSE instruction on two XMM registers; it reads and
                        // writes nothing else (no memory, stack or flags).
                        unsafe {
                            asm!(
                                concat!($insn, " {a}, {b}"),
                                a = inout(xmm_reg) a,
                                b = in(xmm_reg) vector(b),
                                options(pure, nomem, nostack, preserves_flags),
                            );
                        }
                        bits(a)
                    }
                    op as XmmOp
                })*
                _ => return None,
            })
        }
    };
    ($($both:ident => $both_insn:literal,)*) => {
        define_xmm_op!(@ $($both => $both_insn,)*
            Andps => "andps", Andpd => "andpd", Andnps => "andnps", Andnpd => "andnpd",
            Orps => "orps", Orpd => "orpd", Xorps => "xorps", Xorpd => "xorpd",
            Unpcklps => "unpcklps", Unpcklpd => "unpcklpd", Unpckhps => "unpckhps",
            Unpckhpd => "unpckhpd", Punpcklqdq => "punpcklqdq", Punpckhqdq => "punpckhqdq",
            Movsldup => "movsldup", Movshdup => "movshdup", Movddup => "movddup",
            Pmovsxbw => "pmovsxbw", Pmovsxbd => "pmovsxbd", Pmovsxbq => "pmovsxbq",
            Pmovsxwd => "pmovsxwd", Pmovsxwq => "pmovsxwq", Pmovsxdq => "pmovsxdq",
            Pmovzxbw => "pmovzxbw", Pmovzxbd => "pmovzxbd", Pmovzxbq => "pmovzxbq",
            Pmovzxwd => "pmovzxwd", Pmovzxwq => "pmovzxwq", Pmovzxdq => "pmovzxdq",
            Pmuldq => "pmuldq", Pmulld => "pmulld", Pcmpeqq => "pcmpeqq", Pcmpgtq => "pcmpgtq",
            Packusdw => "packusdw", Pminsb => "pminsb", Pminsd => "pminsd", Pminuw => "pminuw",
            Pminud => "pminud", Pmaxsb => "pmaxsb", Pmaxsd => "pmaxsd", Pmaxuw => "pmaxuw",
            Pmaxud => "pmaxud", Phminposuw => "phminposuw",
        );
    };
}

both_forms!(define_xmm_op);

/// Defines `mmx_op`, the MMX forms of `both_forms!`.
macro_rules! define_mmx_op {
    ($($mnemonic:ident => $insn:literal,)*) => {
        /// The host's instruction `mnemonic` on MMX registers, if it has an MMX form run
        /// natively: `dst = op(dst, src)`.
        pub(crate) fn mmx_op(mnemonic: Mnemonic) -> Option<MmxOp> {
            Some(match mnemonic {
                $(Mnemonic::$mnemonic => {
                    fn op(a: u64, b: u64) -> u64 {
                        let mut a = a;
                        // SAFETY: MOVQ, one MMX instruction on MM0 and MM1 (declared
                        // clobbered) and MOVQ back; EMMS empties the x87 tags again, as the
                        // Rust ABI wants them. Nothing else is read or written.
                        unsafe {
                            asm!(
                                "movq mm0, {a}",
                                "movq mm1, {b}",
                                concat!($insn, " mm0, mm1"),
                                "movq {a}, mm0",
                                "emms",
                                a = inout(reg) a,
                                b = in(reg) b,
                                out("mm0") _,
                                out("mm1") _,
                                options(pure, nomem, nostack, preserves_flags),
                            );
                        }
                        a
                    }
                    op as MmxOp
                })*
                _ => return None,
            })
        }
    };
}

both_forms!(define_mmx_op);

/// Defines `float_op`.
macro_rules! define_float_op {
    ($($mnemonic:ident => $insn:literal,)*) => {
        /// The host's floating-point instruction `mnemonic` on XMM registers, if it is one run
        /// natively: `(dst, raised) = op(dst, src, mxcsr)` (see the module documentation).
        pub(crate) fn float_op(mnemonic: Mnemonic) -> Option<FloatOp> {
            Some(match mnemonic {
                $(Mnemonic::$mnemonic => {
                    fn op(a: u128, b: u128, control: u32) -> (u128, u32) {
                        let mut a = vector(a);
                        let raised = with_mxcsr!(control, [concat!($insn, " {a}, {b}")],
                            a = inout(xmm_reg) a,
                            b = in(xmm_reg) vector(b),
                            options(nostack, preserves_flags),
                        );
                        (bits(a), raised)
                    }
                    op as FloatOp
                })*
                _ => return None,
            })
        }
    };
}

define_float_op! {
    Addps => "addps", Addpd => "addpd", Addss => "addss", Addsd => "addsd",
    Subps => "subps", Subpd => "subpd", Subss => "subss", Subsd => "subsd",
    Mulps => "mulps", Mulpd => "mulpd", Mulss => "mulss", Mulsd => "mulsd",
    Divps => "divps", Divpd => "divpd", Divss => "divss", Divsd => "divsd",
    Minps => "minps", Minpd => "minpd", Minss => "minss", Minsd => "minsd",
    Maxps => "maxps", Maxpd => "maxpd", Maxss => "maxss", Maxsd => "maxsd",
    Sqrtps => "sqrtps", Sqrtpd => "sqrtpd", Sqrtss => "sqrtss", Sqrtsd => "sqrtsd",
    Rcpps => "rcpps", Rcpss => "rcpss", Rsqrtps => "rsqrtps", Rsqrtss => "rsqrtss",
    Addsubps => "addsubps", Addsubpd => "addsubpd", Haddps => "haddps", Haddpd => "haddpd",
    Hsubps => "hsubps", Hsubpd => "hsubpd",
    Cvtps2pd => "cvtps2pd", Cvtpd2ps => "cvtpd2ps", Cvtss2sd => "cvtss2sd",
    Cvtsd2ss => "cvtsd2ss", Cvtdq2ps => "cvtdq2ps", Cvtps2dq => "cvtps2dq",
    Cvttps2dq => "cvttps2dq", Cvtdq2pd => "cvtdq2pd", Cvtpd2dq => "cvtpd2dq",
    Cvttpd2dq => "cvttpd2dq",
}

/// Defines the generic `$name::<IMM>` of a floating-point instruction with an immediate.
macro_rules! float_imm_instance {
    ($name:ident, $insn:literal) => {
        fn $name<const IMM: u8>(a: u128, b: u128, control: u32) -> (u128, u32) {
            let mut a = vector(a);
            let raised = with_mxcsr!(control, [concat!($insn, " {a}, {b}, {imm}")],
                a = inout(xmm_reg) a,
                b = in(xmm_reg) vector(b),
                imm = const IMM,
                options(nostack, preserves_flags),
            );
            (bits(a), raised)
        }
    };
}

float_imm_instance!(cmpps, "cmpps");
float_imm_instance!(cmppd, "cmppd");
float_imm_instance!(cmpss, "cmpss");
float_imm_instance!(cmpsd, "cmpsd");
float_imm_instance!(roundps, "roundps");
float_imm_instance!(roundpd, "roundpd");
float_imm_instance!(roundss, "roundss");
float_imm_instance!(roundsd, "roundsd");

/// The floating-point instruction `mnemonic` with an immediate, if it is one run natively,
/// by immediate (see [`at`]).
pub(crate) fn float_imm_op(mnemonic: Mnemonic) -> Option<&'static ByImmediate<FloatOp>> {
    static CMPPS: ByImmediate<FloatOp> = by_immediate!(cmpps);
    static CMPPD: ByImmediate<FloatOp> = by_immediate!(cmppd);
    static CMPSS: ByImmediate<FloatOp> = by_immediate!(cmpss);
    static CMPSD: ByImmediate<FloatOp> = by_immediate!(cmpsd);
    static ROUNDPS: ByImmediate<FloatOp> = by_immediate!(roundps);
    static ROUNDPD: ByImmediate<FloatOp> = by_immediate!(roundpd);
    static ROUNDSS: ByImmediate<FloatOp> = by_immediate!(roundss);
    static ROUNDSD: ByImmediate<FloatOp> = by_immediate!(roundsd);
    Some(match mnemonic {
        Mnemonic::Cmpps => &CMPPS,
        Mnemonic::Cmppd => &CMPPD,
        Mnemonic::Cmpss => &CMPSS,
        Mnemonic::Cmpsd => &CMPSD,
        Mnemonic::Roundps => &ROUNDPS,
        Mnemonic::Roundpd => &ROUNDPD,
        Mnemonic::Roundss => &ROUNDSS,
        Mnemonic::Roundsd => &ROUNDSD,
        _ => return None,
    })
}

/// Defines `compare_op`.
macro_rules! define_compare_op {
    ($($mnemonic:ident => $insn:literal,)*) => {
        /// COMISS, UCOMISS, COMISD or UCOMISD: `(flags, raised) = op(a, b, mxcsr)`, where
        /// `flags` are the six arithmetic flags as the instruction leaves them (ZF, PF and CF
        /// from the comparison, OF, SF and AF clear).
        pub(crate) fn compare_op(mnemonic: Mnemonic) -> Option<CompareOp> {
            Some(match mnemonic {
                $(Mnemonic::$mnemonic => {
                    fn op(a: u128, b: u128, control: u32) -> (u64, u32) {
                        let flags: u64;
                        let raised = with_mxcsr!(control,
                            [concat!($insn, " {a}, {b}"), "pushfq", "pop {flags}"],
                            a = in(xmm_reg) vector(a),
                            b = in(xmm_reg) vector(b),
                            flags = out(reg) flags,
                        );
                        (flags & ARITH_FLAGS, raised)
                    }
                    op as CompareOp
                })*
                _ => return None,
            })
        }
    };
}

define_compare_op! {
    Comiss => "comiss", Ucomiss => "ucomiss", Comisd => "comisd", Ucomisd => "ucomisd",
}

/// PTEST: the six arithmetic flags as it leaves them (ZF and CF from the test, the others
/// clear).
pub(crate) fn ptest(a: u128, b: u128) -> u64 {
    let flags: u64;
    // SAFETY: PTEST reads two XMM registers and writes only EFLAGS, which PUSHFQ and POP copy
    // to a register through the stack (hence no `nostack`).
    unsafe {
        asm!(
            "ptest {a}, {b}",
            "pushfq",
            "pop {flags}",
            a = in(xmm_reg) vector(a),
            b = in(xmm_reg) vector(b),
            flags = out(reg) flags,
            options(nomem),
        );
    }
    flags & ARITH_FLAGS
}

/// An SSE4.2 string comparison's result: the index (PCMPxSTRI) or mask (PCMPxSTRM) and the
/// six arithmetic flags as it leaves them.
pub(crate) type StringCompare = fn(u128, u128, u32, u32) -> (u128, u64);

/// Defines the generic `$name::<IMM>` of an SSE4.2 string comparison. The explicit-length
/// forms take their lengths in EAX and EDX; the index forms write ECX, the mask forms XMM0.
macro_rules! string_compare_instance {
    ($name:ident, $insn:literal, index) => {
        fn $name<const IMM: u8>(a: u128, b: u128, la: u32, lb: u32) -> (u128, u64) {
            let index: u32;
            let flags: u64;
            // SAFETY: the comparison reads two XMM registers, EAX and EDX, writes ECX and
            // EFLAGS, which PUSHFQ and POP copy to a register through the stack.
            unsafe {
                asm!(
                    concat!($insn, " {a}, {b}, {imm}"),
                    "pushfq",
                    "pop {flags}",
                    a = in(xmm_reg) vector(a),
                    b = in(xmm_reg) vector(b),
                    imm = const IMM,
                    in("eax") la,
                    in("edx") lb,
                    out("ecx") index,
                    flags = out(reg) flags,
                    options(nomem),
                );
            }
            (u128::from(index), flags & ARITH_FLAGS)
        }
    };
    ($name:ident, $insn:literal, mask) => {
        fn $name<const IMM: u8>(a: u128, b: u128, la: u32, lb: u32) -> (u128, u64) {
            let mask: __m128i;
            let flags: u64;
            // SAFETY: the comparison reads two XMM registers, EAX and EDX, writes XMM0 and
            // EFLAGS, which PUSHFQ and POP copy to a register through the stack.
            unsafe {
                asm!(
                    concat!($insn, " {a}, {b}, {imm}"),
                    "pushfq",
                    "pop {flags}",
                    a = in(xmm_reg) vector(a),
                    b = in(xmm_reg) vector(b),
                    imm = const IMM,
                    in("eax") la,
                    in("edx") lb,
                    out("xmm0") mask,
                    flags = out(reg) flags,
                    options(nomem),
                );
            }
            (bits(mask), flags & ARITH_FLAGS)
        }
    };
}

string_compare_instance!(pcmpestri, "pcmpestri", index);
string_compare_instance!(pcmpestrm, "pcmpestrm", mask);
string_compare_instance!(pcmpistri, "pcmpistri", index);
string_compare_instance!(pcmpistrm, "pcmpistrm", mask);

/// PCMPESTRI, PCMPESTRM, PCMPISTRI or PCMPISTRM (any operand size), by immediate: `(result,
/// flags) = op(a, b, eax, edx)`; the implicit-length forms ignore EAX and EDX.
pub(crate) fn string_compare(mnemonic: Mnemonic) -> Option<&'static ByImmediate<StringCompare>> {
    static PCMPESTRI: ByImmediate<StringCompare> = by_immediate!(pcmpestri);
    static PCMPESTRM: ByImmediate<StringCompare> = by_immediate!(pcmpestrm);
    static PCMPISTRI: ByImmediate<StringCompare> = by_immediate!(pcmpistri);
    static PCMPISTRM: ByImmediate<StringCompare> = by_immediate!(pcmpistrm);
    Some(match mnemonic {
        Mnemonic::Pcmpestri | Mnemonic::Pcmpestri64 => &PCMPESTRI,
        Mnemonic::Pcmpestrm | Mnemonic::Pcmpestrm64 => &PCMPESTRM,
        Mnemonic::Pcmpistri => &PCMPISTRI,
        Mnemonic::Pcmpistrm => &PCMPISTRM,
        _ => return None,
    })
}

/// CRC32 of the low `size` bytes (1, 2, 4 or 8) of `value` into `crc`.
pub(crate) fn crc32(crc: u64, value: u64, size: usize) -> u64 {
    let mut crc = crc;
    // SAFETY: CRC32 reads and writes general registers only.
    unsafe {
        match size {
            1 => asm!("crc32 {c:e}, {v:l}", c = inout(reg) crc, v = in(reg) value,
                options(pure, nomem, nostack, preserves_flags)),
            2 => asm!("crc32 {c:e}, {v:x}", c = inout(reg) crc, v = in(reg) value,
                options(pure, nomem, nostack, preserves_flags)),
            4 => asm!("crc32 {c:e}, {v:e}", c = inout(reg) crc, v = in(reg) value,
                options(pure, nomem, nostack, preserves_flags)),
            _ => asm!("crc32 {c}, {v}", c = inout(reg) crc, v = in(reg) value,
                options(pure, nomem, nostack, preserves_flags)),
        }
    }
    crc
}

/// An integer-to-float conversion: `(dst, raised) = op(dst, integer, mxcsr)`.
pub(crate) type FromInteger = fn(u128, u64, u32) -> (u128, u32);

/// A float-to-integer conversion: `(integer, raised) = op(src, mxcsr)`.
pub(crate) type ToInteger = fn(u128, u32) -> (u64, u32);

/// Defines an integer-to-float conversion from a 32-bit (`:e`) or 64-bit (`:r`) register.
macro_rules! from_integer {
    ($name:ident, $insn:literal) => {
        fn $name(a: u128, value: u64, control: u32) -> (u128, u32) {
            let mut a = vector(a);
            let raised = with_mxcsr!(control, [$insn],
                a = inout(xmm_reg) a,
                v = in(reg) value,
                options(nostack, preserves_flags),
            );
            (bits(a), raised)
        }
    };
}

from_integer!(cvtsi2ss_32, "cvtsi2ss {a}, {v:e}");
from_integer!(cvtsi2ss_64, "cvtsi2ss {a}, {v:r}");
from_integer!(cvtsi2sd_32, "cvtsi2sd {a}, {v:e}");
from_integer!(cvtsi2sd_64, "cvtsi2sd {a}, {v:r}");

/// CVTSI2SS or CVTSI2SD from an integer of `size` bytes (4 or 8).
pub(crate) fn from_integer(mnemonic: Mnemonic, size: usize) -> Option<FromInteger> {
    Some(match (mnemonic, size) {
        (Mnemonic::Cvtsi2ss, 4) => cvtsi2ss_32,
        (Mnemonic::Cvtsi2ss, _) => cvtsi2ss_64,
        (Mnemonic::Cvtsi2sd, 4) => cvtsi2sd_32,
        (Mnemonic::Cvtsi2sd, _) => cvtsi2sd_64,
        _ => return None,
    })
}

/// Defines a float-to-integer conversion into a 32-bit (`:e`) or 64-bit (`:r`) register.
macro_rules! to_integer {
    ($name:ident, $insn:literal) => {
        fn $name(b: u128, control: u32) -> (u64, u32) {
            let value: u64;
            let raised = with_mxcsr!(control, [$insn],
                b = in(xmm_reg) vector(b),
                v = out(reg) value,
                options(nostack, preserves_flags),
            );
            (value, raised)
        }
    };
}

to_integer!(cvtss2si_32, "cvtss2si {v:e}, {b}");
to_integer!(cvtss2si_64, "cvtss2si {v:r}, {b}");
to_integer!(cvttss2si_32, "cvttss2si {v:e}, {b}");
to_integer!(cvttss2si_64, "cvttss2si {v:r}, {b}");
to_integer!(cvtsd2si_32, "cvtsd2si {v:e}, {b}");
to_integer!(cvtsd2si_64, "cvtsd2si {v:r}, {b}");
to_integer!(cvttsd2si_32, "cvttsd2si {v:e}, {b}");
to_integer!(cvttsd2si_64, "cvttsd2si {v:r}, {b}");

/// CVT(T)SS2SI or CVT(T)SD2SI into an integer of `size` bytes (4 or 8).
pub(crate) fn to_integer(mnemonic: Mnemonic, size: usize) -> Option<ToInteger> {
    let wide = size == 8;
    Some(match mnemonic {
        Mnemonic::Cvtss2si if wide => cvtss2si_64,
        Mnemonic::Cvtss2si => cvtss2si_32,
        Mnemonic::Cvttss2si if wide => cvttss2si_64,
        Mnemonic::Cvttss2si => cvttss2si_32,
        Mnemonic::Cvtsd2si if wide => cvtsd2si_64,
        Mnemonic::Cvtsd2si => cvtsd2si_32,
        Mnemonic::Cvttsd2si if wide => cvttsd2si_64,
        Mnemonic::Cvttsd2si => cvttsd2si_32,
        _ => return None,
    })
}
