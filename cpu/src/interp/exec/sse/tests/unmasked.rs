//! Unmasked SIMD floating-point exceptions against the host processor itself: random operands
//! (zeros, extremes, denormals, infinities, NaNs, random bits) under random MXCSRs (any masks,
//! rounding mode, DAZ and FTZ), each operation run once on the host with the guest's MXCSR
//! really loaded, its #XM caught as SIGFPE, and once by the interpreter; results, MXCSR and
//! whether the exception was raised must agree.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use iced_x86::{Code, Decoder, DecoderOptions, Encoder, Instruction, Register};

use super::{CODE, Machine};

/// Where the SIGFPE handler resumes: just past the instruction that trapped.
static RESUME: AtomicU64 = AtomicU64::new(0);
/// MXCSR when the instruction trapped.
static TRAPPED_MXCSR: AtomicU32 = AtomicU32::new(0);
/// The instruction trapped.
static TRAPPED: AtomicBool = AtomicBool::new(false);

/// Records the trap's MXCSR, masks every exception in the context the kernel restores, and
/// resumes after the instruction.
extern "C" fn on_sigfpe(_: libc::c_int, _: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext whose FPU state pointer is valid for the
    // duration of the handler; only atomics and that context are touched, which is
    // async-signal-safe.
    unsafe {
        let fpu = (*context).uc_mcontext.fpregs;
        TRAPPED_MXCSR.store((*fpu).mxcsr, Ordering::SeqCst);
        (*fpu).mxcsr = 0x1f80;
        (*context).uc_mcontext.gregs[libc::REG_RIP as usize] = RESUME.load(Ordering::SeqCst) as i64;
    }
    TRAPPED.store(true, Ordering::SeqCst);
}

/// The host's result, MXCSR after the instruction (or when it trapped), and whether it
/// trapped.
type HostRun = fn(u128, u128, u32) -> (u128, u32, bool);

/// Defines a [`HostRun`] of `$insn` (with the immediate text `$imm`, if any).
macro_rules! host {
    ($name:ident, $insn:literal) => {
        host!($name, $insn, "");
    };
    ($name:ident, $insn:literal, $imm:literal) => {
        fn $name(a: u128, b: u128, mxcsr: u32) -> (u128, u32, bool) {
            // SAFETY: u128 and __m128i are both 16 bytes of plain data.
            let mut a = unsafe { core::mem::transmute::<u128, core::arch::x86_64::__m128i>(a) };
            // SAFETY: as above.
            let b = unsafe { core::mem::transmute::<u128, core::arch::x86_64::__m128i>(b) };
            let mut csr = mxcsr;
            let mut host = 0u32;
            TRAPPED.store(false, Ordering::SeqCst);
            // SAFETY: the instruction runs with the guest's MXCSR; if it traps, `on_sigfpe`
            // masks every exception in the MXCSR the kernel restores and resumes at label 2,
            // after it, where the host's MXCSR is put back. Only the named operands and the
            // two MXCSR slots are touched.
            unsafe {
                core::arch::asm!(
                    "lea {resume}, [rip + 2f]",
                    "mov [{slot}], {resume}",
                    "stmxcsr [{host}]",
                    "ldmxcsr [{csr}]",
                    concat!($insn, " {a}, {b}", $imm),
                    "2:",
                    "stmxcsr [{csr}]",
                    "ldmxcsr [{host}]",
                    resume = out(reg) _,
                    slot = in(reg) RESUME.as_ptr(),
                    host = in(reg) &raw mut host,
                    csr = in(reg) &raw mut csr,
                    a = inout(xmm_reg) a,
                    b = in(xmm_reg) b,
                );
            }
            let trapped = TRAPPED.load(Ordering::SeqCst);
            let after = if trapped {
                TRAPPED_MXCSR.load(Ordering::SeqCst)
            } else {
                csr
            };
            // SAFETY: as above.
            let a = unsafe { core::mem::transmute::<core::arch::x86_64::__m128i, u128>(a) };
            (a, after, trapped)
        }
    };
}

host!(addps, "addps");
host!(subps, "subps");
host!(mulps, "mulps");
host!(divps, "divps");
host!(addss, "addss");
host!(mulsd, "mulsd");
host!(divpd, "divpd");
host!(subsd, "subsd");
host!(sqrtps, "sqrtps");
host!(minps, "minps");
host!(rcpps, "rcpps");
host!(cvtpd2ps, "cvtpd2ps");
host!(cvtsd2ss, "cvtsd2ss");
host!(cvtps2dq, "cvtps2dq");
host!(haddps, "haddps");
host!(hsubpd, "hsubpd");
host!(addsubpd, "addsubpd");
host!(cmpltps, "cmpps", ", 1");
host!(roundps, "roundps", ", 4");
host!(dpps_ff, "dpps", ", 0xff");
host!(dpps_5a, "dpps", ", 0x5a");
host!(dppd_33, "dppd", ", 0x33");
host!(dppd_12, "dppd", ", 0x12");

/// Each operation: its code, immediate, host run, and whether its elements are doubles.
const OPERATIONS: [(Code, u32, HostRun, bool); 23] = [
    (Code::Addps_xmm_xmmm128, 0, addps, false),
    (Code::Subps_xmm_xmmm128, 0, subps, false),
    (Code::Mulps_xmm_xmmm128, 0, mulps, false),
    (Code::Divps_xmm_xmmm128, 0, divps, false),
    (Code::Addss_xmm_xmmm32, 0, addss, false),
    (Code::Mulsd_xmm_xmmm64, 0, mulsd, true),
    (Code::Divpd_xmm_xmmm128, 0, divpd, true),
    (Code::Subsd_xmm_xmmm64, 0, subsd, true),
    (Code::Sqrtps_xmm_xmmm128, 0, sqrtps, false),
    (Code::Minps_xmm_xmmm128, 0, minps, false),
    (Code::Rcpps_xmm_xmmm128, 0, rcpps, false),
    (Code::Cvtpd2ps_xmm_xmmm128, 0, cvtpd2ps, true),
    (Code::Cvtsd2ss_xmm_xmmm64, 0, cvtsd2ss, true),
    (Code::Cvtps2dq_xmm_xmmm128, 0, cvtps2dq, false),
    (Code::Haddps_xmm_xmmm128, 0, haddps, false),
    (Code::Hsubpd_xmm_xmmm128, 0, hsubpd, true),
    (Code::Addsubpd_xmm_xmmm128, 0, addsubpd, true),
    (Code::Cmpps_xmm_xmmm128_imm8, 1, cmpltps, false),
    (Code::Roundps_xmm_xmmm128_imm8, 4, roundps, false),
    (Code::Dpps_xmm_xmmm128_imm8, 0xff, dpps_ff, false),
    (Code::Dpps_xmm_xmmm128_imm8, 0x5a, dpps_5a, false),
    (Code::Dppd_xmm_xmmm128_imm8, 0x33, dppd_33, true),
    (Code::Dppd_xmm_xmmm128_imm8, 0x12, dppd_12, true),
];

/// Singles worth trying: zeros, ones, the extremes, denormals, infinities, NaNs, and values
/// whose products and quotients overflow or underflow exactly or not.
const SINGLES: [u32; 18] = [
    0,
    0x3f80_0000,
    0x7f7f_ffff,
    0x0080_0000,
    1,
    0x007f_ffff,
    0x7f80_0000,
    0x7fc0_0000,
    0x7f80_0001,
    0x1fc0_0001,
    0x1c80_0000,
    0x3ea0_0000,
    0x6000_0000,
    0x2000_0000,
    0x3fc0_0001,
    0x4000_0000,
    0x3eaa_aaab,
    0x5f80_0000,
];

/// Doubles worth trying.
const DOUBLES: [u64; 16] = [
    0,
    0x3ff0_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    1,
    0x000f_ffff_ffff_ffff,
    0x7ff0_0000_0000_0000,
    0x7ff8_0000_0000_0000,
    0x7ff0_0000_0000_0001,
    0x7e37_e43c_8800_759c, // 1e300
    0x01a5_6e1f_c2f8_f359, // 1e-300
    0x37a1_6c26_2777_579c, // 1e-40
    0x47f0_74f8_c4d3_cd7b, // 3.5e38
    0x3fd3_3333_3333_3333, // 0.3
    0x3810_0000_0000_0001,
    0x0000_7fff_ffff_ffff,
];

/// xorshift64.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A random XMM value of singles or doubles, mostly from the lists above, with random signs.
fn operand(state: &mut u64, double: bool) -> u128 {
    let (count, width) = if double { (2, 64) } else { (4, 32) };
    (0..count).fold(0, |value, k| {
        let r = next(state);
        let sign = (r >> 40) & 1;
        let element = match (r % 5, double) {
            (0, _) => next(state),
            (_, true) => DOUBLES[(r >> 8) as usize % DOUBLES.len()] | sign << 63,
            (_, false) => u64::from(SINGLES[(r >> 8) as usize % SINGLES.len()]) | sign << 31,
        } & (u64::MAX >> (64 - width));
        value | u128::from(element) << (width * k)
    })
}

#[test]
fn unmasked_exceptions_are_the_hosts() {
    let mut action: libc::sigaction;
    // SAFETY: a zeroed sigaction is valid; installing a handler for SIGFPE affects only
    // threads that unmask SIMD exceptions, which only this test does.
    unsafe {
        action = core::mem::zeroed();
        action.sa_sigaction = on_sigfpe as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        assert_eq!(
            libc::sigaction(libc::SIGFPE, &action, core::ptr::null_mut()),
            0
        );
    }
    let mut state = 0x1234_5678_9abc_def0;
    let mut m = Machine::new(&[]);
    let mut mismatches = Vec::new();
    for _ in 0..100_000 {
        let (code, imm, host, double) = OPERATIONS[next(&mut state) as usize % OPERATIONS.len()];
        let a = operand(&mut state, double);
        let b = operand(&mut state, double);
        let r = next(&mut state) as u32;
        let mxcsr = (0x1f80 & !((r & 0x3f) << 7)) | (r & 0x6000) | (r & 0x8040);
        let (result, after, trapped) = host(a, b, mxcsr);

        let instruction = if imm == 0 {
            Instruction::with2(code, Register::XMM0, Register::XMM1)
        } else {
            Instruction::with3(code, Register::XMM0, Register::XMM1, imm)
        }
        .unwrap();
        let mut encoder = Encoder::new(64);
        encoder.encode(&instruction, CODE).unwrap();
        let bytes = encoder.take_buffer();
        let decoded = Decoder::with_ip(64, &bytes, CODE, DecoderOptions::NONE).decode();
        m.cpu.fpu.state.mxcsr = mxcsr;
        m.set_xmm(0, a);
        m.set_xmm(1, b);
        let raised = m.cpu.execute(&decoded).is_err();
        let (interpreted, interpreted_mxcsr) = (m.xmm(0), m.cpu.fpu.state.mxcsr);
        if (raised, interpreted, interpreted_mxcsr) != (trapped, result, after) {
            mismatches.push(format!(
                "{decoded} a={a:032x} b={b:032x} mxcsr={mxcsr:04x}: host {trapped} \
                 {after:04x} {result:032x}, interpreter {raised} {interpreted_mxcsr:04x} \
                 {interpreted:032x}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
