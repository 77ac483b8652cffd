//! SSE floating point on the JIT, which runs it on the host under the guest's MXCSR, against
//! the interpreter: random runs of arithmetic, square roots, compares and conversions over
//! special values (signed zeros, denormals, infinities, quiet and signalling NaNs) and plain
//! ones, in registers and memory, under every rounding mode with and without DAZ and FTZ.
//! The XMM registers, MXCSR (its accumulated exception flags included), the general
//! registers and RFLAGS must come out the same.

mod common;

use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};
use umbra_cpu::backend::emu::EmuOptions;
use umbra_cpu::interp::cpuid;
use umbra_jit::JitFactory;
use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::Memslots;

const CODE: u64 = 0x1000;
/// MXCSR's value for LDMXCSR.
const MXCSR_AT: u64 = 0x3000;
/// The initial XMM registers.
const XMM_IN: u64 = 0x3100;
/// Memory operands: [RSI + 16 * n].
const OPERANDS: u64 = 0x4000;
const OPERAND_SLOTS: u64 = 16;
/// FXSAVE64's image at the end.
const FXSAVE_OUT: u64 = 0x5000;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Doubles and singles worth computing on.
const DOUBLES: [u64; 12] = [
    0x0000_0000_0000_0000,                // +0
    0x8000_0000_0000_0000,                // -0
    0x3ff8_0000_0000_0000,                // 1.5
    0xc00c_0000_0000_0000,                // -3.5
    0x0000_0000_0000_0001,                // the smallest denormal
    0x000f_ffff_ffff_ffff,                // the largest denormal
    0x7ff0_0000_0000_0000,                // +inf
    0xfff0_0000_0000_0000,                // -inf
    0x7ff8_0000_0000_0000,                // a quiet NaN
    0x7ff0_0000_0000_0001,                // a signalling NaN
    0x7fef_ffff_ffff_ffff,                // the largest
    (1u64 << 63) | 0x43e0_0000_0000_0000, // -2^63
];
const SINGLES: [u32; 10] = [
    0x0000_0000,
    0x8000_0000,
    0x3fc0_0000,
    0x0000_0001,
    0x007f_ffff,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0x7f80_0001,
    0x4f00_0000,
];

/// A random 16-byte value: special doubles or singles in its lanes, or random bits.
fn value(rng: &mut Rng) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    match rng.below(3) {
        0 => {
            for lane in bytes.chunks_exact_mut(8) {
                lane.copy_from_slice(&DOUBLES[rng.below(DOUBLES.len())].to_le_bytes());
            }
        }
        1 => {
            for lane in bytes.chunks_exact_mut(4) {
                lane.copy_from_slice(&SINGLES[rng.below(SINGLES.len())].to_le_bytes());
            }
        }
        _ => {
            bytes[..8].copy_from_slice(&rng.next().to_le_bytes());
            bytes[8..].copy_from_slice(&rng.next().to_le_bytes());
        }
    }
    bytes
}

/// The shapes of the instructions generated.
#[derive(Clone, Copy)]
enum Shape {
    /// XMM, XMM or memory.
    Xmm,
    /// XMM, XMM or memory, imm8 below the bound.
    XmmImm(u32),
    /// XMM, a general register or memory.
    FromGpr,
    /// A general register, XMM or memory.
    ToGpr,
}

const CODES: &[(Code, Shape)] = &[
    (Code::Addsd_xmm_xmmm64, Shape::Xmm),
    (Code::Addss_xmm_xmmm32, Shape::Xmm),
    (Code::Addpd_xmm_xmmm128, Shape::Xmm),
    (Code::Addps_xmm_xmmm128, Shape::Xmm),
    (Code::Subsd_xmm_xmmm64, Shape::Xmm),
    (Code::Subps_xmm_xmmm128, Shape::Xmm),
    (Code::Mulsd_xmm_xmmm64, Shape::Xmm),
    (Code::Mulss_xmm_xmmm32, Shape::Xmm),
    (Code::Mulpd_xmm_xmmm128, Shape::Xmm),
    (Code::Divsd_xmm_xmmm64, Shape::Xmm),
    (Code::Divps_xmm_xmmm128, Shape::Xmm),
    (Code::Minsd_xmm_xmmm64, Shape::Xmm),
    (Code::Maxps_xmm_xmmm128, Shape::Xmm),
    (Code::Sqrtsd_xmm_xmmm64, Shape::Xmm),
    (Code::Sqrtps_xmm_xmmm128, Shape::Xmm),
    (Code::Ucomisd_xmm_xmmm64, Shape::Xmm),
    (Code::Comiss_xmm_xmmm32, Shape::Xmm),
    (Code::Cvtss2sd_xmm_xmmm32, Shape::Xmm),
    (Code::Cvtsd2ss_xmm_xmmm64, Shape::Xmm),
    (Code::Cvtdq2ps_xmm_xmmm128, Shape::Xmm),
    (Code::Cvtps2dq_xmm_xmmm128, Shape::Xmm),
    (Code::Cvttpd2dq_xmm_xmmm128, Shape::Xmm),
    (Code::Cvtps2pd_xmm_xmmm64, Shape::Xmm),
    (Code::Haddpd_xmm_xmmm128, Shape::Xmm),
    (Code::Cmpsd_xmm_xmmm64_imm8, Shape::XmmImm(8)),
    (Code::Cmpps_xmm_xmmm128_imm8, Shape::XmmImm(8)),
    (Code::Roundsd_xmm_xmmm64_imm8, Shape::XmmImm(16)),
    (Code::Cvtsi2sd_xmm_rm64, Shape::FromGpr),
    (Code::Cvtsi2ss_xmm_rm32, Shape::FromGpr),
    (Code::Cvttsd2si_r64_xmmm64, Shape::ToGpr),
    (Code::Cvtss2si_r32_xmmm32, Shape::ToGpr),
];

/// General registers the instructions use: not RSP, nor RSI (the operands' base); R12 and
/// R13 have no home in the JIT and are renamed.
const GPRS: [Register; 6] = [
    Register::RAX,
    Register::RCX,
    Register::RBX,
    Register::R8,
    Register::R12,
    Register::R13,
];

/// `n` random floating-point instructions the interpreter has.
fn instructions(rng: &mut Rng, n: usize) -> Vec<Instruction> {
    let usable: Vec<(Code, Shape)> = CODES
        .iter()
        .copied()
        .filter(|&(code, _)| {
            let probe = Instruction::with2(code, Register::XMM0, Register::XMM1);
            probe.map_or(true, |i| {
                i.cpuid_features().iter().all(|&f| cpuid::advertises(f))
            })
        })
        .collect();
    (0..n)
        .map(|_| {
            let (code, shape) = usable[rng.below(usable.len())];
            let xmm = |rng: &mut Rng| Register::XMM0 + rng.below(8) as u32;
            let memory = MemoryOperand::with_base_displ(
                Register::RSI,
                16 * rng.below(OPERAND_SLOTS as usize) as i64,
            );
            let in_memory = rng.below(3) == 0;
            let gpr64 = GPRS[rng.below(GPRS.len())];
            let gpr = if code.op_code().op_kind(0) == iced_x86::OpCodeOperandKind::r32_reg
                || code.op_code().op_kind(1) == iced_x86::OpCodeOperandKind::r32_or_mem
            {
                gpr64.full_register32()
            } else {
                gpr64
            };
            let i = match (shape, in_memory) {
                (Shape::Xmm, false) => Instruction::with2(code, xmm(rng), xmm(rng)),
                (Shape::Xmm, true) => Instruction::with2(code, xmm(rng), memory),
                (Shape::XmmImm(bound), false) => {
                    let imm = rng.below(bound as usize) as u32;
                    Instruction::with3(code, xmm(rng), xmm(rng), imm)
                }
                (Shape::XmmImm(bound), true) => {
                    let imm = rng.below(bound as usize) as u32;
                    Instruction::with3(code, xmm(rng), memory, imm)
                }
                (Shape::FromGpr, false) => Instruction::with2(code, xmm(rng), gpr),
                (Shape::FromGpr, true) => Instruction::with2(code, xmm(rng), memory),
                (Shape::ToGpr, false) => Instruction::with2(code, gpr, xmm(rng)),
                (Shape::ToGpr, true) => Instruction::with2(code, gpr, memory),
            };
            i.expect("a valid instruction")
        })
        .collect()
}

/// The program: MXCSR and XMM0-7 loaded, `body`, FXSAVE64 of the result, HLT.
fn program(body: &[Instruction]) -> Vec<u8> {
    let mut all = vec![
        Instruction::with1(Code::Ldmxcsr_m32, MemoryOperand::with_displ(MXCSR_AT, 4)).unwrap(),
    ];
    for n in 0..8u32 {
        let at = MemoryOperand::with_displ(XMM_IN + 16 * u64::from(n), 4);
        all.push(Instruction::with2(Code::Movdqu_xmm_xmmm128, Register::XMM0 + n, at).unwrap());
    }
    all.extend_from_slice(body);
    all.push(
        Instruction::with1(
            Code::Fxsave64_m512byte,
            MemoryOperand::with_displ(FXSAVE_OUT, 4),
        )
        .unwrap(),
    );
    all.push(Instruction::with(Code::Hlt));
    let mut encoder = Encoder::new(64);
    let mut rip = CODE;
    for i in &all {
        rip += encoder.encode(i, rip).expect("encodes") as u64;
    }
    encoder.take_buffer()
}

/// What a run leaves: FXSAVE's image (MXCSR and the XMM registers), the general registers and
/// RFLAGS.
fn run(
    options: &EmuOptions,
    memslots: &std::sync::Arc<Memslots>,
    gpr: [u64; 16],
) -> (Vec<u8>, [u64; 16], u64) {
    let mut vcpu = common::vcpu(options, memslots, CODE, gpr);
    common::run_to_halt(&mut *vcpu, 1000);
    let mut image = vec![0u8; 512];
    memslots.read(Gpa(FXSAVE_OUT), &mut image).unwrap();
    let regs = vcpu.registers().unwrap();
    // MXCSR and the XMM registers; the x87 part is not the test's.
    let mut state = image[24..28].to_vec();
    state.extend_from_slice(&image[160..160 + 16 * 16]);
    (state, regs.gpr, regs.rflags)
}

#[test]
fn floating_point_on_the_jit_agrees_with_the_interpreter() {
    let interpreter = EmuOptions::default();
    let jit = EmuOptions {
        engine: Some(std::sync::Arc::new(JitFactory { threshold: 0 })),
        ..EmuOptions::default()
    };
    let mut rng = Rng(0x5eed_f10a_7000_0001);
    for case in 0..400 {
        // Every rounding mode, DAZ and FTZ on or off; every exception masked.
        let mxcsr: u32 = 0x1f80
            | (rng.below(4) as u32) << 13
            | (rng.below(2) as u32) << 6
            | (rng.below(2) as u32) << 15;
        let length = 1 + rng.below(40);
        let body = instructions(&mut rng, length);
        let code = program(&body);
        let mut gpr = [0u64; 16];
        for r in gpr.iter_mut() {
            *r = match rng.below(3) {
                0 => rng.next(),
                1 => rng.next() % 1000,
                _ => (rng.next() as i64 % 1000).wrapping_neg() as u64,
            };
        }
        gpr[6] = OPERANDS;
        let data: Vec<[u8; 16]> = (0..8 + OPERAND_SLOTS).map(|_| value(&mut rng)).collect();
        let machine = || {
            let memslots = common::memory(0, 0);
            memslots.write(Gpa(CODE), &code).unwrap();
            memslots.write(Gpa(MXCSR_AT), &mxcsr.to_le_bytes()).unwrap();
            for (n, v) in data.iter().enumerate() {
                let n = n as u64;
                let at = if n < 8 {
                    XMM_IN + 16 * n
                } else {
                    OPERANDS + 16 * (n - 8)
                };
                memslots.write(Gpa(at), v).unwrap();
            }
            memslots
        };
        let expected = run(&interpreter, &machine(), gpr);
        let got = run(&jit, &machine(), gpr);
        if expected != got {
            let mut formatter = iced_x86::IntelFormatter::new();
            let mut listing = String::new();
            for i in &body {
                use iced_x86::Formatter;
                let mut line = String::new();
                formatter.format(i, &mut line);
                listing += &format!("  {line}\n");
            }
            panic!(
                "case {case}, MXCSR {mxcsr:#x}:\n{listing}interpreter: {expected:x?}\njit: {got:x?}"
            );
        }
    }
}
