//! SSE and MMX instructions run through [`Interpreter::step`] on a small in-memory machine in
//! 64-bit mode: results and MXCSR against hand-checked values, and the exceptions they raise,
//! seen as the handler the vCPU lands in.

use std::sync::Arc;

use iced_x86::{Code, Encoder, Instruction, MemoryOperand, OpKind, Register};
use umbra_mmu::addr::{Gfn, Gpa};
use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotId};
use umbra_mmu::shadow::ShadowMmu;

use crate::backend::NoDevices;
use crate::interp::exception::vector;
use crate::interp::{Interpreter, StepEvent};
use crate::state::{DescriptorTable, Registers, Segment, SystemRegisters};

/// Where the program starts.
const CODE: u64 = 0x1_0000;
/// A page of data for the program, 16-byte aligned.
pub(in crate::interp::exec) const DATA: u64 = 0x2_0000;
const GDT: u64 = 0x5000;
const IDT: u64 = 0x6000;
/// Exception handlers, 16 bytes apart: one HLT each.
const HANDLERS: u64 = 0x7000;
const STACK: u64 = 0xf000;

/// Builds an instruction from its code and operands.
macro_rules! ins {
    ($code:ident) => {
        iced_x86::Instruction::with(iced_x86::Code::$code)
    };
    ($code:ident, $a:expr) => {
        iced_x86::Instruction::with1(iced_x86::Code::$code, $a).unwrap()
    };
    ($code:ident, $a:expr, $b:expr) => {
        iced_x86::Instruction::with2(iced_x86::Code::$code, $a, $b).unwrap()
    };
    ($code:ident, $a:expr, $b:expr, $c:expr) => {
        iced_x86::Instruction::with3(iced_x86::Code::$code, $a, $b, $c).unwrap()
    };
}
pub(in crate::interp::exec) use ins;

/// `[base + displacement]`.
pub(in crate::interp::exec) fn mem(base: Register, displacement: i64) -> MemoryOperand {
    MemoryOperand::with_base_displ(base, displacement)
}

/// One vCPU in 64-bit mode at CPL 0 over 2 MiB of identity-mapped RAM, with SSE enabled
/// (CR4.OSFXSR and OSXMMEXCPT, CR0.MP and NE), the x87 unit after FNINIT, and an IDT whose
/// every exception handler is a HLT.
pub(in crate::interp::exec) struct Machine {
    pub(in crate::interp::exec) cpu: Interpreter,
    memslots: Arc<Memslots>,
}

impl Machine {
    /// A machine about to run `program`, then HLT.
    pub(in crate::interp::exec) fn new(program: &[Instruction]) -> Machine {
        let memslots = Arc::new(Memslots::new());
        let ram = HostMapping::anonymous(2 << 20).unwrap();
        memslots
            .create(SlotId(0), Gfn(0), 512, ram, 0, MemslotFlags::empty())
            .unwrap();
        let write = |gpa: u64, value: u64| memslots.write_u64(Gpa(gpa), value).unwrap();
        write(0x1000, 0x2000 | 0x3);
        write(0x2000, 0x3000 | 0x3);
        write(0x3000, 0x83);
        write(GDT + 8, 0x00af_9b00_0000_ffff);
        write(GDT + 16, 0x00cf_9300_0000_ffff);
        for v in 0..32 {
            let handler = HANDLERS + 16 * v;
            let low =
                (handler & 0xffff) | (8 << 16) | (0x8e << 40) | ((handler >> 16) & 0xffff) << 48;
            write(IDT + 16 * v, low);
            write(IDT + 16 * v + 8, handler >> 32);
            memslots.write(Gpa(handler), &[0xf4]).unwrap();
        }
        let mut encoder = Encoder::new(64);
        let mut rip = CODE;
        for instruction in program.iter().chain([&ins!(Hlt)]) {
            rip += encoder.encode(instruction, rip).unwrap() as u64;
        }
        memslots.write(Gpa(CODE), &encoder.take_buffer()).unwrap();

        let mut cpu = Interpreter::new(
            memslots.clone(),
            Arc::new(ShadowMmu::new()),
            Arc::new(NoDevices),
        );
        let flat = Segment {
            limit: 0xffff_ffff,
            present: true,
            s: true,
            g: true,
            ..Segment::default()
        };
        let data = Segment {
            selector: 16,
            type_: 0x3,
            db: true,
            ..flat
        };
        cpu.set_system_registers(&SystemRegisters {
            cs: Segment {
                selector: 8,
                type_: 0xb,
                l: true,
                ..flat
            },
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: Segment {
                type_: 0xb,
                present: true,
                limit: 0x67,
                ..Segment::default()
            },
            ldtr: Segment {
                unusable: true,
                ..Segment::default()
            },
            gdt: DescriptorTable {
                base: GDT,
                limit: 23,
            },
            idt: DescriptorTable {
                base: IDT,
                limit: 32 * 16 - 1,
            },
            cr0: 0x8001_0033,
            cr3: 0x1000,
            cr4: 0x620,
            efer: 0xd00,
            ..SystemRegisters::default()
        });
        let mut regs = Registers {
            rip: CODE,
            rflags: 2,
            ..Registers::default()
        };
        regs.gpr[4] = STACK;
        cpu.set_registers(&regs);
        cpu.fpu.init();
        Machine { cpu, memslots }
    }

    /// Runs until HLT: `None` at the end of the program, `Some(vector)` in an exception's
    /// handler.
    pub(in crate::interp::exec) fn run(&mut self) -> Option<u8> {
        for _ in 0..10_000 {
            match self.cpu.step() {
                StepEvent::Halt => {
                    let rip = self.cpu.regs.rip - 1;
                    return (HANDLERS..HANDLERS + 32 * 16)
                        .contains(&rip)
                        .then(|| ((rip - HANDLERS) / 16) as u8);
                }
                StepEvent::Shutdown => panic!("triple fault"),
                _ => {}
            }
        }
        panic!("the program did not halt");
    }

    /// Writes guest memory.
    pub(in crate::interp::exec) fn write(&self, gpa: u64, data: &[u8]) {
        self.memslots.write(Gpa(gpa), data).unwrap();
    }

    /// Reads `N` bytes of guest memory.
    pub(in crate::interp::exec) fn read<const N: usize>(&self, gpa: u64) -> [u8; N] {
        let mut data = [0u8; N];
        self.memslots.read(Gpa(gpa), &mut data).unwrap();
        data
    }

    /// XMM register `n`.
    fn xmm(&self, n: usize) -> u128 {
        self.cpu.fpu.state.xmm[n]
    }

    /// Sets XMM register `n`.
    fn set_xmm(&mut self, n: usize, value: u128) {
        self.cpu.fpu.state.xmm[n] = value;
    }
}

/// Four floats as an XMM value, element 0 first.
fn ps(values: [f32; 4]) -> u128 {
    values
        .iter()
        .enumerate()
        .fold(0, |x, (k, v)| x | u128::from(v.to_bits()) << (32 * k))
}

/// Two doubles as an XMM value, element 0 first.
fn pd(values: [f64; 2]) -> u128 {
    u128::from(values[0].to_bits()) | u128::from(values[1].to_bits()) << 64
}

/// The float in element `k`.
fn lane_ps(value: u128, k: usize) -> f32 {
    f32::from_bits((value >> (32 * k)) as u32)
}

use Register::{
    EAX, EBX, ECX, EDX, MM0, MM1, RAX, RBX, RCX, RDX, XMM0, XMM1, XMM2, XMM3, XMM4, XMM5, XMM6,
    XMM7, XMM8, XMM9, XMM10, XMM11, XMM15,
};

#[test]
fn packed_and_scalar_arithmetic_round_as_the_hardware_does() {
    let mut m = Machine::new(&[
        ins!(Addps_xmm_xmmm128, XMM0, XMM1),
        ins!(Mulsd_xmm_xmmm64, XMM2, XMM3),
        ins!(Sqrtps_xmm_xmmm128, XMM4, XMM1),
    ]);
    m.set_xmm(0, ps([1.0, 2.5, -3.0, 1e30]));
    m.set_xmm(1, ps([0.5, 0.25, 3.0, 1e30]));
    m.set_xmm(2, pd([1.0 / 3.0, 7.0]));
    m.set_xmm(3, pd([3.0, -1.0]));
    assert_eq!(m.run(), None);
    assert_eq!(m.xmm(0), ps([1.5, 2.75, 0.0, 2e30]));
    // MULSD writes the low double only.
    assert_eq!(m.xmm(2), pd([1.0, 7.0]));
    assert_eq!(lane_ps(m.xmm(4), 0), 0.5f32.sqrt());
    // 1/3 * 3 rounds to 1: precision lost.
    assert_eq!(m.cpu.fpu.state.mxcsr, 0x1f80 | 0x20);
}

#[test]
fn rounding_control_daz_and_ftz_come_from_mxcsr() {
    let mut m = Machine::new(&[
        ins!(Divss_xmm_xmmm32, XMM0, XMM1),
        ins!(Ldmxcsr_m32, mem(RAX, 0)),
        ins!(Divss_xmm_xmmm32, XMM2, XMM1),
        ins!(Ldmxcsr_m32, mem(RAX, 4)),
        ins!(Mulss_xmm_xmmm32, XMM3, XMM4),
        ins!(Addss_xmm_xmmm32, XMM5, XMM6),
    ]);
    m.cpu.regs.gpr[0] = DATA;
    // Round toward zero, then FTZ and DAZ with round to nearest.
    m.write(DATA, &0x7f80u32.to_le_bytes());
    m.write(DATA + 4, &0x9fc0u32.to_le_bytes());
    m.set_xmm(0, ps([1.0, 0.0, 0.0, 0.0]));
    m.set_xmm(1, ps([3.0, 0.0, 0.0, 0.0]));
    m.set_xmm(2, ps([1.0, 0.0, 0.0, 0.0]));
    m.set_xmm(3, ps([1e-30, 0.0, 0.0, 0.0]));
    m.set_xmm(4, ps([1e-10, 0.0, 0.0, 0.0]));
    m.set_xmm(5, u128::from(1u32)); // the smallest denormal
    m.set_xmm(6, ps([0.0, 0.0, 0.0, 0.0]));
    assert_eq!(m.run(), None);
    let nearest = (1.0f32 / 3.0).to_bits();
    assert_eq!(m.xmm(0) as u32, nearest);
    assert_eq!(m.xmm(2) as u32, nearest - 1, "toward zero is one ulp below");
    assert_eq!(m.xmm(3) as u32, 0, "FTZ flushes the tiny product");
    assert_eq!(m.xmm(5) as u32, 0, "DAZ reads the denormal as zero");
    // UE and PE from FTZ; DAZ keeps DE clear.
    assert_eq!(m.cpu.fpu.state.mxcsr, 0x9fc0 | 0x30);
}

#[test]
fn nans_propagate_and_signaling_ones_raise_invalid() {
    let snan = 0x7ff0_0000_0000_0001u64;
    let qnan = 0x7ff8_0000_0000_0002u64;
    let mut m = Machine::new(&[
        ins!(Addsd_xmm_xmmm64, XMM0, XMM1),
        ins!(Addsd_xmm_xmmm64, XMM2, XMM3),
    ]);
    m.set_xmm(0, snan.into());
    m.set_xmm(1, 1.0f64.to_bits().into());
    m.set_xmm(2, 2.0f64.to_bits().into());
    m.set_xmm(3, qnan.into());
    assert_eq!(m.run(), None);
    assert_eq!(m.xmm(0) as u64, snan | 1 << 51, "an SNaN comes out quieted");
    assert_eq!(m.xmm(2) as u64, qnan);
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x01);
}

#[test]
fn an_unmasked_exception_raises_xm_and_leaves_the_destination() {
    let program = [
        ins!(Ldmxcsr_m32, mem(RAX, 0)),
        ins!(Divps_xmm_xmmm128, XMM0, XMM1),
    ];
    let mut m = Machine::new(&program);
    m.cpu.regs.gpr[0] = DATA;
    // Divide by zero unmasked.
    m.write(DATA, &(0x1f80u32 & !0x200).to_le_bytes());
    m.set_xmm(0, ps([1.0, 1.0, 1.0, 1.0]));
    m.set_xmm(1, ps([2.0, 0.0, 4.0, 8.0]));
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.xmm(0), ps([1.0, 1.0, 1.0, 1.0]));
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x04);
    // Without CR4.OSXMMEXCPT the same is #UD.
    let mut m = Machine::new(&program);
    m.cpu.sregs.cr4 &= !0x400;
    m.cpu.regs.gpr[0] = DATA;
    m.write(DATA, &(0x1f80u32 & !0x200).to_le_bytes());
    m.set_xmm(0, ps([1.0, 1.0, 1.0, 1.0]));
    m.set_xmm(1, ps([2.0, 0.0, 4.0, 8.0]));
    assert_eq!(m.run(), Some(vector::UD));
    // Masked, the quotient is infinite and ZE is set.
    let mut m = Machine::new(&program[1..]);
    m.set_xmm(0, ps([1.0, 1.0, 1.0, 1.0]));
    m.set_xmm(1, ps([2.0, 0.0, 4.0, 8.0]));
    assert_eq!(m.run(), None);
    assert_eq!(m.xmm(0), ps([0.5, f32::INFINITY, 0.25, 0.125]));
    assert_eq!(m.cpu.fpu.state.mxcsr, 0x1f84);
}

#[test]
fn an_unmasked_precomputation_exception_sets_only_those_flags() {
    // Lane 0 divides by zero (ZE unmasked), lane 1 overflows inexactly (OE, PE masked).
    let mut m = Machine::new(&[ins!(Divps_xmm_xmmm128, XMM0, XMM1)]);
    m.cpu.fpu.state.mxcsr = 0x1f80 & !0x200;
    m.set_xmm(0, ps([1.0, f32::MAX, 0.0, 0.0]));
    m.set_xmm(1, ps([0.0, 0.3, 1.0, 1.0]));
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x04);
    // With OE unmasked instead, every flag raised is set.
    let mut m = Machine::new(&[ins!(Divps_xmm_xmmm128, XMM0, XMM1)]);
    m.cpu.fpu.state.mxcsr = 0x1f80 & !0x400;
    m.set_xmm(0, ps([1.0, f32::MAX, 0.0, 0.0]));
    m.set_xmm(1, ps([0.0, 0.3, 1.0, 1.0]));
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x04 | 0x08 | 0x20);
}

#[test]
fn an_unmasked_overflow_sets_precision_only_for_an_inexact_unbounded_result() {
    // Lane 0: FLT_MAX * 2 overflows, exactly with an unbounded exponent; lane 1 is merely
    // inexact; lane 2 overflows inexactly.
    let mut m = Machine::new(&[ins!(Mulps_xmm_xmmm128, XMM0, XMM1)]);
    m.cpu.fpu.state.mxcsr = 0x1f80 & !0x400;
    m.set_xmm(0, ps([f32::MAX, 1.0, 1.0, 1.0]));
    m.set_xmm(1, ps([2.0, 1.0, 1.0, 1.0]));
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x08, "OE alone");
    let mut m = Machine::new(&[ins!(Mulps_xmm_xmmm128, XMM0, XMM1)]);
    m.cpu.fpu.state.mxcsr = 0x1f80 & !0x400;
    m.set_xmm(0, ps([f32::MAX, 1.0, f32::MAX, 1.0]));
    m.set_xmm(1, ps([2.0, 1.0, f32::from_bits(0x3fc0_0001), 1.0]));
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x28, "OE and PE");
    // Underflow unmasked: 1.5000001 * 2^-64 * 2^-70 is exact unbounded, though not as a
    // denormal.
    let mut m = Machine::new(&[ins!(Mulss_xmm_xmmm32, XMM0, XMM1)]);
    m.cpu.fpu.state.mxcsr = 0x1f80 & !0x800;
    m.set_xmm(0, 0x1fc0_0001);
    m.set_xmm(1, 0x1c80_0000);
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x10, "UE alone");
    // A narrowing conversion overflows inexactly.
    let mut m = Machine::new(&[ins!(Cvtpd2ps_xmm_xmmm128, XMM0, XMM1)]);
    m.cpu.fpu.state.mxcsr = 0x1f80 & !0x400;
    m.set_xmm(1, pd([1e300, 1.0]));
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x28);
}

#[test]
fn an_unmasked_underflow_is_raised_by_an_exact_tiny_result() {
    // 2^-64 * 2^-70 = 2^-134: a denormal, exactly.
    let mut m = Machine::new(&[ins!(Mulss_xmm_xmmm32, XMM0, XMM1)]);
    m.cpu.fpu.state.mxcsr = 0x1f80 & !0x800;
    m.set_xmm(0, 0x1f80_0000);
    m.set_xmm(1, 0x1c80_0000);
    assert_eq!(m.run(), Some(vector::XM));
    assert_eq!(m.xmm(0), 0x1f80_0000);
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x10);
}

#[test]
fn misaligned_movaps_faults_and_movups_does_not() {
    let mut m = Machine::new(&[
        ins!(Movups_xmm_xmmm128, XMM0, mem(RAX, 1)),
        ins!(Movaps_xmm_xmmm128, XMM1, mem(RAX, 1)),
    ]);
    m.cpu.regs.gpr[0] = DATA;
    m.write(DATA, &(0u8..32).collect::<Vec<_>>());
    assert_eq!(m.run(), Some(vector::GP));
    assert_eq!(
        m.xmm(0),
        u128::from_le_bytes(std::array::from_fn(|k| k as u8 + 1))
    );
    assert_eq!(m.xmm(1), 0);
}

#[test]
fn control_registers_gate_the_unit() {
    let program = [ins!(Pxor_xmm_xmmm128, XMM0, XMM0)];
    for (cr0_set, cr0_clear, cr4_clear, expected) in [
        (0x8, 0, 0, vector::NM),
        (0x4, 0, 0, vector::UD),
        (0, 0, 0x200, vector::UD),
    ] {
        let mut m = Machine::new(&program);
        m.cpu.sregs.cr0 = (m.cpu.sregs.cr0 | cr0_set) & !cr0_clear;
        m.cpu.sregs.cr4 &= !cr4_clear;
        assert_eq!(m.run(), Some(expected));
    }
}

#[test]
fn packed_integers_shuffles_and_masks() {
    let mut m = Machine::new(&[
        ins!(Paddb_xmm_xmmm128, XMM0, XMM1),
        ins!(Pcmpeqb_xmm_xmmm128, XMM2, XMM3),
        ins!(Pmovmskb_r32_xmm, EAX, XMM2),
        ins!(Pshufd_xmm_xmmm128_imm8, XMM4, XMM3, 0x1bu32),
        ins!(Pshufb_xmm_xmmm128, XMM5, XMM6),
        ins!(Palignr_xmm_xmmm128_imm8, XMM7, XMM3, 4u32),
        ins!(Psrldq_xmm_imm8, XMM8, 3u32),
        ins!(Pminub_xmm_xmmm128, XMM9, XMM3),
        ins!(Psraw_xmm_imm8, XMM10, 4u32),
        ins!(Pextrw_r32_xmm_imm8, ECX, XMM3, 9u32),
        ins!(Pinsrd_xmm_rm32_imm8, XMM11, EDX, 2u32),
    ]);
    let bytes: u128 = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100;
    m.set_xmm(0, u128::from_le_bytes([0xff; 16]));
    m.set_xmm(1, u128::from_le_bytes([2; 16]));
    m.set_xmm(2, bytes ^ 0xff00);
    m.set_xmm(3, bytes);
    m.set_xmm(5, bytes);
    m.set_xmm(
        6,
        u128::from_le_bytes([0x0f, 0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]),
    );
    m.set_xmm(7, u128::MAX);
    m.set_xmm(8, bytes);
    m.set_xmm(9, u128::from_le_bytes([8; 16]));
    m.set_xmm(10, 0x8000_7ff0);
    m.cpu.regs.gpr[2] = 0xdead_beef;
    assert_eq!(m.run(), None);
    assert_eq!(m.xmm(0), u128::from_le_bytes([1; 16]), "PADDB wraps");
    assert_eq!(m.cpu.regs.gpr[0], 0xfffd, "every byte equal but byte 1");
    assert_eq!(m.xmm(4), 0x0302_0100_0706_0504_0b0a_0908_0f0e_0d0c);
    assert_eq!(
        m.xmm(5).to_le_bytes(),
        [0x0f, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    );
    assert_eq!(m.xmm(7), (bytes >> 32) | (u128::MAX << 96));
    assert_eq!(m.xmm(8), bytes >> 24);
    assert_eq!(
        m.xmm(9).to_le_bytes(),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8]
    );
    assert_eq!(m.xmm(10), 0xf800_07ff);
    assert_eq!(m.cpu.regs.gpr[1], 0x0302, "the index is taken modulo 8");
    assert_eq!(m.xmm(11), 0xdead_beef << 64);
}

#[test]
fn conversions_to_and_from_general_registers() {
    let mut m = Machine::new(&[
        ins!(Cvttsd2si_r32_xmmm64, EAX, XMM0),
        ins!(Cvttsd2si_r64_xmmm64, RBX, XMM0),
        ins!(Cvtsd2si_r32_xmmm64, ECX, XMM1),
        ins!(Cvtsi2sd_xmm_rm64, XMM2, RDX),
        ins!(Cvtsi2ss_xmm_rm32, XMM3, EDX),
    ]);
    m.set_xmm(0, 1e10f64.to_bits().into());
    m.set_xmm(1, 2.5f64.to_bits().into());
    m.set_xmm(2, pd([0.0, 42.0]));
    m.cpu.regs.gpr[0] = u64::MAX;
    m.cpu.regs.gpr[2] = (-7i64) as u64;
    assert_eq!(m.run(), None);
    // Too big for 32 bits: the integer indefinite, IE; fine for 64 bits.
    assert_eq!(m.cpu.regs.gpr[0], 0x8000_0000);
    assert_eq!(m.cpu.regs.gpr[3], 10_000_000_000);
    assert_eq!(m.cpu.regs.gpr[1], 2, "2.5 rounds to even");
    assert_eq!(m.xmm(2), pd([-7.0, 42.0]));
    assert_eq!(lane_ps(m.xmm(3), 0), -7.0);
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x21);
}

#[test]
fn comisd_and_ucomisd_set_zf_pf_cf() {
    let qnan = f64::NAN.to_bits();
    let cases = [
        (1.0f64.to_bits(), 2.0f64.to_bits(), 0x01u64, 0),
        (2.0f64.to_bits(), 1.0f64.to_bits(), 0x00, 0),
        (2.0f64.to_bits(), 2.0f64.to_bits(), 0x40, 0),
        (qnan, 2.0f64.to_bits(), 0x45, 0),
    ];
    for (a, b, flags, raised) in cases {
        let mut m = Machine::new(&[ins!(Ucomisd_xmm_xmmm64, XMM0, XMM1)]);
        m.cpu.regs.rflags = 2 | 0x8d5;
        m.set_xmm(0, a.into());
        m.set_xmm(1, b.into());
        assert_eq!(m.run(), None);
        assert_eq!(m.cpu.regs.rflags & 0x8d5, flags);
        assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, raised);
    }
    // COMISD signals invalid on a QNaN.
    let mut m = Machine::new(&[ins!(Comisd_xmm_xmmm64, XMM0, XMM1)]);
    m.set_xmm(0, qnan.into());
    assert_eq!(m.run(), None);
    assert_eq!(m.cpu.fpu.state.mxcsr & 0x3f, 0x01);
}

#[test]
fn moves_between_registers_and_memory() {
    let mut m = Machine::new(&[
        ins!(Movd_xmm_rm32, XMM0, EBX),
        ins!(Movq_rm64_xmm, RCX, XMM1),
        ins!(Movss_xmm_xmmm32, XMM2, XMM1),
        ins!(Movss_xmm_xmmm32, XMM3, mem(RAX, 0)),
        ins!(Movhps_xmm_m64, XMM4, mem(RAX, 0)),
        ins!(Movdqa_xmmm128_xmm, mem(RAX, 16), XMM1),
        ins!(Movsd_xmmm64_xmm, mem(RAX, 32), XMM1),
    ]);
    let ones = u128::MAX;
    m.cpu.regs.gpr[0] = DATA;
    m.cpu.regs.gpr[3] = 0x1_2345_6789;
    m.set_xmm(0, ones);
    m.set_xmm(1, 0x1111_2222_3333_4444_5555_6666_7777_8888);
    m.set_xmm(2, ones);
    m.set_xmm(3, ones);
    m.set_xmm(4, 0x99);
    m.write(DATA, &0xaabb_ccdd_eeff_0011u64.to_le_bytes());
    assert_eq!(m.run(), None);
    assert_eq!(m.xmm(0), 0x2345_6789);
    assert_eq!(m.cpu.regs.gpr[1], 0x5555_6666_7777_8888);
    assert_eq!(
        m.xmm(2),
        (ones << 32) | 0x7777_8888,
        "register MOVSS merges"
    );
    assert_eq!(m.xmm(3), 0xeeff_0011, "a load zero-extends");
    assert_eq!(m.xmm(4), 0xaabb_ccdd_eeff_0011 << 64 | 0x99);
    assert_eq!(u128::from_le_bytes(m.read(DATA + 16)), m.xmm(1));
    assert_eq!(
        m.read::<12>(DATA + 32),
        [0x88, 0x88, 0x77, 0x77, 0x66, 0x66, 0x55, 0x55, 0, 0, 0, 0]
    );
}

#[test]
fn mxcsr_loads_are_checked() {
    let mut m = Machine::new(&[
        ins!(Stmxcsr_m32, mem(RAX, 0)),
        ins!(Ldmxcsr_m32, mem(RAX, 4)),
    ]);
    m.cpu.regs.gpr[0] = DATA;
    m.write(DATA + 4, &0x1_1f80u32.to_le_bytes());
    assert_eq!(m.run(), Some(vector::GP));
    assert_eq!(m.read::<4>(DATA), 0x1f80u32.to_le_bytes());
}

#[test]
fn fxsave_and_fxrstor_round_trip() {
    let mut m = Machine::new(&[
        ins!(Fxsave64_m512byte, mem(RAX, 0)),
        ins!(Fxsave_m512byte, mem(RAX, 512)),
        ins!(Pxor_xmm_xmmm128, XMM15, XMM15),
        ins!(Ldmxcsr_m32, mem(RAX, 1024)),
        ins!(Fxrstor64_m512byte, mem(RAX, 0)),
        ins!(Fxsave_m512byte, mem(RAX, 1)),
    ]);
    m.cpu.regs.gpr[0] = DATA;
    m.write(DATA + 1024, &0x1f80u32.to_le_bytes());
    m.set_xmm(15, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
    m.cpu.fpu.state.mxcsr = 0x7f80;
    m.cpu.fpu.state.st[0] = 0x3fff_8000_0000_0000_0000;
    m.cpu.fpu.state.ftw = 0x80;
    m.cpu.fpu.state.fsw = 7 << 11;
    let saved = m.cpu.fx_state();
    assert_eq!(m.run(), Some(vector::GP), "misaligned FXSAVE");
    assert_eq!(m.cpu.fx_state(), saved);
    let image = m.read::<512>(DATA);
    assert_eq!(&image[24..32], &[0x80, 0x7f, 0, 0, 0xff, 0xff, 0, 0]);
    assert_eq!(&image[0..5], &[0x7f, 0x03, 0x00, 0x38, 0x80]);
    assert_eq!(
        &image[400..416],
        &0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10u128.to_le_bytes()
    );
    assert_eq!(
        image[..416],
        m.read::<512>(DATA + 512)[..416],
        "no pointers to differ yet"
    );
}

#[test]
fn mmx_instructions_switch_the_x87_unit_to_mmx() {
    let mut m = Machine::new(&[
        ins!(Fld1),
        ins!(Movq_mm_rm64, MM1, RBX),
        ins!(Paddw_mm_mmm64, MM1, MM1),
        ins!(Pmovmskb_r32_mm, EAX, MM1),
        ins!(Movq2dq_xmm_mm, XMM0, MM1),
    ]);
    m.cpu.regs.gpr[3] = 0x8000_7fff_0001_ffff;
    assert_eq!(m.run(), None);
    let s = m.cpu.fx_state();
    assert_eq!(s.top(), 0);
    assert_eq!(s.ftw, 0xff);
    assert_eq!(s.st[1], 0xffff_0000_fffe_0002_fffe);
    assert_eq!(m.cpu.regs.gpr[0], 0b0011_0011);
    assert_eq!(m.xmm(0), 0x0000_fffe_0002_fffe);
    // FLD1 had pushed to R7, which MM7 now shows.
    assert_eq!(s.st[7], 0x3fff_8000_0000_0000_0000);
    let mut m = Machine::new(&[ins!(Movq_mm_rm64, MM0, RBX), ins!(Emms)]);
    assert_eq!(m.run(), None);
    assert_eq!(m.cpu.fx_state().ftw, 0);
}

#[test]
fn string_comparison_and_crc32() {
    let mut m = Machine::new(&[
        ins!(Pcmpistri_xmm_xmmm128_imm8, XMM0, mem(RAX, 0), 0x0cu32),
        ins!(Mov_r32_rm32, EBX, ECX),
        ins!(Crc32_r32_rm8, EDX, mem(RAX, 32)),
    ]);
    m.cpu.regs.gpr[0] = DATA;
    // Equal ordered: "lo" in "hello world", unaligned-tolerant.
    m.set_xmm(0, u128::from(u16::from_le_bytes(*b"lo")));
    m.write(DATA, b"hello world\0\0\0\0\0");
    m.write(DATA + 32, b"1");
    m.cpu.regs.gpr[2] = 0xffff_ffff;
    assert_eq!(m.run(), None);
    assert_eq!(m.cpu.regs.gpr[3], 3);
    // CRC-32C of "1", pre- and post-inverted as software does it: 0x90f599e3.
    assert_eq!(!(m.cpu.regs.gpr[2] as u32), 0x90f5_99e3);
}

#[test]
fn cpuid_advertises_the_extensions() {
    let [_, _, ecx, edx] = crate::interp::cpuid::cpuid(1, 0);
    for bit in [0, 23, 24, 25, 26] {
        assert_ne!(edx & (1 << bit), 0, "EDX bit {bit}");
    }
    assert_eq!(ecx & 1 != 0, std::arch::is_x86_feature_detected!("sse3"));
    assert_eq!(
        ecx & (1 << 20) != 0,
        std::arch::is_x86_feature_detected!("sse4.2")
    );
    assert!(crate::interp::cpuid::advertises(
        iced_x86::CpuidFeature::SSE2
    ));
    assert!(!crate::interp::cpuid::advertises(
        iced_x86::CpuidFeature::AVX
    ));
}

#[test]
fn maskmovdqu_stores_the_selected_bytes() {
    let maskmovdqu = Instruction::with_maskmovdqu(64, XMM0, XMM1, Register::None).unwrap();
    let mut m = Machine::new(&[maskmovdqu]);
    m.cpu.regs.gpr[7] = DATA + 3;
    m.write(DATA, &[0xee; 32]);
    m.set_xmm(0, 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100);
    m.set_xmm(1, 0x80 | (0xff << 120));
    assert_eq!(m.run(), None);
    let mut expected = [0xee; 32];
    expected[3] = 0x00;
    expected[18] = 0x0f;
    assert_eq!(m.read::<32>(DATA), expected);
}

/// An instance of `code` with register operands (memory at `[rax]` where `memory` is set or
/// only memory will do), or `None` if it has an operand of another kind.
fn example(code: Code, memory: bool) -> Option<Instruction> {
    use iced_x86::OpCodeOperandKind as K;
    match code {
        Code::Maskmovq_rDI_mm_mm => {
            return Instruction::with_maskmovq(64, MM1, MM0, Register::None).ok();
        }
        Code::Maskmovdqu_rDI_xmm_xmm => {
            return Instruction::with_maskmovdqu(64, XMM1, XMM2, Register::None).ok();
        }
        _ => {}
    }
    let info = code.op_code();
    let mut instruction = Instruction::default();
    instruction.set_code(code);
    for n in 0..info.op_count() {
        let kind = info.op_kind(n);
        let pick = |first: Register, second: Register| if n == 0 { first } else { second };
        let register = match kind {
            K::xmm_reg | K::xmm_rm => pick(XMM1, XMM2),
            K::mm_reg | K::mm_rm => pick(MM1, MM0),
            K::r32_reg | K::r32_rm => pick(ECX, EDX),
            K::r64_reg | K::r64_rm => pick(RCX, RDX),
            K::xmm_or_mem if !memory => pick(XMM1, XMM2),
            K::mm_or_mem if !memory => pick(MM1, MM0),
            K::r32_or_mem if !memory => pick(ECX, EDX),
            K::r64_or_mem if !memory => pick(RCX, RDX),
            K::r16_or_mem if !memory => Register::DX,
            K::r8_or_mem if !memory => Register::DL,
            K::ax => Register::AX,
            K::st0 => Register::ST0,
            K::sti_opcode => Register::ST1,
            K::imm8 => {
                instruction.set_op_kind(n, OpKind::Immediate8);
                instruction.set_immediate8(1);
                continue;
            }
            K::mem
            | K::xmm_or_mem
            | K::mm_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::r16_or_mem
            | K::r8_or_mem => {
                instruction.set_op_kind(n, OpKind::Memory);
                instruction.set_memory_base(RAX);
                continue;
            }
            _ => return None,
        };
        instruction.set_op_kind(n, OpKind::Register);
        instruction.set_op_register(n, register);
    }
    Some(instruction)
}

#[test]
fn every_advertised_x87_and_simd_instruction_is_implemented() {
    // Every legacy-encoded instruction of the x87, MMX and SSE families whose CPUID features
    // are advertised runs, in each of its register and memory forms: what is not
    // implemented must not be advertised.
    use iced_x86::{CpuidFeature as F, Decoder, DecoderOptions, EncodingKind};
    let family = |f: &F| {
        matches!(
            f,
            F::FPU
                | F::FPU287
                | F::FPU387
                | F::MMX
                | F::SSE
                | F::SSE2
                | F::SSE3
                | F::SSSE3
                | F::SSE4_1
                | F::SSE4_2
                | F::FXSR
        )
    };
    let mut m = Machine::new(&[]);
    m.cpu.regs.gpr[0] = DATA;
    let mut missing = Vec::new();
    let mut checked = 0;
    for code in Code::values() {
        let features = code.cpuid_features();
        if code.op_code().encoding() != EncodingKind::Legacy
            || !features.iter().any(family)
            || !features
                .iter()
                .all(|&f| crate::interp::cpuid::advertises(f))
        {
            continue;
        }
        for memory in [false, true] {
            let Some(instruction) = example(code, memory) else {
                missing.push(format!("{code:?}: no example"));
                continue;
            };
            let mut encoder = Encoder::new(64);
            encoder.encode(&instruction, CODE).unwrap();
            let bytes = encoder.take_buffer();
            let decoded = Decoder::with_ip(64, &bytes, CODE, DecoderOptions::NONE).decode();
            if decoded.code() != code {
                // The forms with a WAIT prefix decode as WAIT, then the no-wait form.
                continue;
            }
            m.write(CODE, &bytes);
            m.cpu.regs.rip = CODE;
            m.cpu.fpu.init();
            m.cpu.fpu.state.mxcsr = 0x1f80;
            m.write(DATA, &[0; 512]);
            checked += 1;
            if let Err(exception) = m.cpu.execute(&decoded)
                && exception.vector == vector::UD
            {
                missing.push(format!("{code:?} ({decoded})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} raise #UD: {missing:#?}",
        missing.len()
    );
    assert!(checked > 500, "only {checked} forms checked");
}

mod unmasked;
