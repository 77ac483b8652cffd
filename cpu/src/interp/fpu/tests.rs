//! Tests of the FPU state: its layout, the tag word, the environment and FXSAVE images, and the
//! host runners against hand-checked values.

use super::simd;
use super::*;

/// The 80-bit extended form of `value` (a normal double or zero), in an ST slot.
fn extended(value: f64) -> u128 {
    let bits = value.to_bits();
    let sign = u128::from(bits >> 63) << 79;
    let exponent = (bits >> 52) & 0x7ff;
    if exponent == 0 {
        return sign;
    }
    let mantissa = (1u64 << 63) | ((bits & ((1 << 52) - 1)) << 11);
    sign | (u128::from(exponent - 1023 + 16383) << 64) | u128::from(mantissa)
}

/// An x87 state after FNINIT with `values` pushed, the first pushed last (so it is ST0).
fn stack(values: &[f64]) -> FxState {
    let mut fpu = Fpu::default();
    fpu.init();
    let s = &mut fpu.state;
    let top = (8 - values.len()) & 7;
    s.fsw = (top as u16) << 11;
    for (k, value) in values.iter().enumerate() {
        s.st[k] = extended(*value);
        s.ftw |= 1 << (top + k);
    }
    fpu.state
}

#[test]
fn the_reset_state_is_the_sdms() {
    let s = FxState::default();
    assert_eq!(s.fcw, 0x0040);
    assert_eq!(s.mxcsr, 0x1f80);
    assert_eq!(s.full_tag_word(), 0x5555);
    let mut fpu = Fpu::default();
    fpu.init();
    assert_eq!(fpu.state.fcw, 0x037f);
    assert_eq!(fpu.state.full_tag_word(), 0xffff);
    assert_eq!(fpu.state.mxcsr, 0x1f80, "FNINIT leaves MXCSR alone");
}

#[test]
fn the_full_tag_word_classifies_each_register() {
    let mut s = stack(&[1.0, 0.0]);
    // ST0 = 1.0 in R6, ST1 = 0.0 in R7; a NaN in R5 (slot 7 with TOP = 6).
    s.st[7] = (0x7fff << 64) | (3 << 62);
    s.ftw |= 1 << 5;
    assert_eq!(s.full_tag_word(), 0b01_00_10_11_11_11_11_11);
    let mut t = FxState::default();
    t.set_full_tag_word(0b11_01_10_00_11_11_11_11);
    assert_eq!(t.ftw, 0b0111_0000);
}

#[test]
fn entering_mmx_rotates_the_stack_to_physical_order() {
    let mut fpu = Fpu {
        state: stack(&[1.0, 2.0]),
        ..Fpu::default()
    };
    fpu.set_mm(7, 0x1234);
    fpu.enter_mmx();
    assert_eq!(fpu.state.top(), 0);
    assert_eq!(fpu.state.ftw, 0xff);
    assert_eq!(fpu.state.st[6], extended(1.0));
    assert_eq!(fpu.state.st[7], (0xffff << 64) | 0x1234);
    assert_eq!(fpu.mm(7), 0x1234);
}

#[test]
fn environments_round_trip_in_every_layout() {
    let mut fpu = Fpu {
        state: stack(&[1.5]),
        fcs: 0x33,
        fds: 0x2b,
    };
    fpu.state.fop = 0x544;
    fpu.state.fip = 0x1234_5678;
    fpu.state.fdp = 0x9abc_def0;
    for (wide, real) in [(true, false), (false, false), (true, true), (false, true)] {
        let layout = EnvironmentLayout { wide, real };
        let bytes = fpu.store_environment(layout);
        let mut loaded = Fpu::default();
        loaded.load_environment(&bytes[..layout.len()], layout);
        assert_eq!(loaded.state.fcw, fpu.state.fcw, "{layout:?}");
        assert_eq!(loaded.state.fsw, fpu.state.fsw, "{layout:?}");
        assert_eq!(loaded.state.ftw, fpu.state.ftw, "{layout:?}");
        if !real {
            assert_eq!(loaded.fcs, 0x33, "{layout:?}");
            assert_eq!(loaded.state.fip as u16, 0x5678, "{layout:?}");
        }
    }
    // The 32-bit protected-mode layout, as the host's FNSTENV writes it.
    let bytes = fpu.store_environment(EnvironmentLayout {
        wide: true,
        real: false,
    });
    assert_eq!(&bytes[0..4], &[0x7f, 0x03, 0xff, 0xff]);
    assert_eq!(&bytes[8..12], &[0xff, 0x3f, 0xff, 0xff]);
    assert_eq!(&bytes[16..20], &[0x33, 0x00, 0x44, 0x05]);
    assert_eq!(&bytes[24..28], &[0x2b, 0x00, 0xff, 0xff]);
    // Real mode: linear pointers, FOP beside the instruction pointer's high bits.
    let real = fpu.store_environment(EnvironmentLayout {
        wide: false,
        real: true,
    });
    let ip = 0x33 * 16 + 0x1234_5678u32;
    assert_eq!(u16::from_le_bytes([real[6], real[7]]), ip as u16);
    assert_eq!(
        u16::from_le_bytes([real[8], real[9]]),
        (((ip >> 16) & 0xf) << 12) as u16 | 0x544
    );
}

#[test]
fn fxsave_images_round_trip_in_both_formats() {
    let mut fpu = Fpu {
        state: stack(&[3.25, -2.0]),
        fcs: 0x10,
        fds: 0x18,
    };
    fpu.state.mxcsr = 0x9fc0;
    fpu.state.xmm[15] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
    fpu.state.fop = 0x1c1;
    fpu.state.fip = 0xffff_8000_0000_1000;
    fpu.state.fdp = 0x2000;
    for wide in [true, false] {
        let image = fpu.fxsave_image(wide, true);
        assert_eq!(&image[24..32], &[0xc0, 0x9f, 0, 0, 0xff, 0xff, 0, 0]);
        let mut loaded = Fpu::default();
        loaded.load_fxsave_image(&image, wide, Some(16)).unwrap();
        assert_eq!(loaded.state.st, fpu.state.st);
        assert_eq!(loaded.state.xmm, fpu.state.xmm);
        assert_eq!(loaded.state.mxcsr, 0x9fc0);
        assert_eq!(loaded.state.fop, 0x1c1);
        if wide {
            assert_eq!(loaded.state.fip, 0xffff_8000_0000_1000);
        } else {
            assert_eq!(&image[8..14], &[0x00, 0x10, 0, 0, 0x10, 0x00]);
            assert_eq!(loaded.state.fip, 0x1000);
            assert_eq!((loaded.fcs, loaded.fds), (0x10, 0x18));
        }
    }
    let mut image = fpu.fxsave_image(true, true);
    image[26] = 1;
    assert_eq!(
        Fpu::default().load_fxsave_image(&image, true, Some(16)),
        Err(FpuError::ReservedMxcsr(0x1_9fc0))
    );
    // Without CR4.OSFXSR neither MXCSR nor the XMM registers are loaded.
    let mut loaded = Fpu::default();
    loaded.load_fxsave_image(&image, true, None).unwrap();
    assert_eq!(loaded.state.mxcsr, MXCSR_RESET);
}

#[test]
fn loading_normalizes_as_the_processor_does() {
    let mut fpu = Fpu::default();
    let mut image = fpu.fxsave_image(true, true);
    image[0..2].copy_from_slice(&0u16.to_le_bytes());
    image[2..4].copy_from_slice(&0x0001u16.to_le_bytes());
    fpu.load_fxsave_image(&image, true, Some(16)).unwrap();
    assert_eq!(fpu.state.fcw, 0x0040, "reserved control bits");
    assert_eq!(fpu.state.fsw, 0x8081, "IE unmasked: ES and B");
    assert_eq!(control_word(0xffff), 0x1f7f);
}

#[test]
fn x87_register_forms_run_on_the_guest_state() {
    // FADD ST0, ST1 (D8 C1): 1.5 + 2.25.
    let mut s = stack(&[1.5, 2.25]);
    let outcome = x87::run_register(&mut s, 0xd8, 0xc1, 0x2);
    assert_eq!(s.st[0], extended(3.75));
    assert_eq!(outcome.raised, 0);
    // FCOMI ST0, ST1 (DB F1): 3.75 > 2.25 clears ZF, PF and CF.
    let outcome = x87::run_register(&mut s, 0xdb, 0xf1, 0x2 | 0x45);
    assert_eq!(outcome.rflags & 0x45, 0);
    // FSQRT (D9 FA) of -1 with IE masked: the indefinite QNaN, IE raised.
    let mut s = stack(&[-1.0]);
    let outcome = x87::run_register(&mut s, 0xd9, 0xfa, 0x2);
    assert_eq!(outcome.raised, 1);
    assert_eq!(s.st[0], 0xffff_c000_0000_0000_0000);
    assert_eq!(s.fsw & fsw::ES, 0);
    // Old flags are kept, and an unmasked one shows as ES.
    s.fcw &= !1;
    x87::run_register(&mut s, 0xd9, 0xe0, 0x2); // FCHS
    assert_eq!(s.fsw & (fsw::ES | fsw::B | 1), fsw::ES | fsw::B | 1);
}

#[test]
fn x87_memory_forms_load_and_store_through_the_buffer() {
    let mut s = stack(&[]);
    let mut operand = [0u8; 16];
    operand[..8].copy_from_slice(&2.5f64.to_le_bytes());
    x87::run_memory(&mut s, 0xdd, 0, &mut operand); // FLD m64
    assert_eq!(s.top(), 7);
    assert_eq!(s.st[0], extended(2.5));
    let mut out = [0u8; 16];
    x87::run_memory(&mut s, 0xd9, 3, &mut out); // FSTP m32
    assert_eq!(&out[..4], &2.5f32.to_le_bytes());
    assert_eq!(s.top(), 0);
}

#[test]
fn float_operations_report_the_flags_they_raise() {
    let add = simd::float_op(iced_x86::Mnemonic::Addss).unwrap();
    let one = u128::from(1.0f32.to_bits());
    let tiny = u128::from(1e-10f32.to_bits());
    let (sum, raised) = add(one, tiny, MXCSR_RESET);
    assert_eq!(sum as u32, 1.0f32.to_bits());
    assert_eq!(raised, 0x20, "PE");
    // Round up: the next float above 1.
    let (sum, _) = add(one, tiny, MXCSR_RESET | 0x4000);
    assert_eq!(sum as u32, 1.0f32.to_bits() + 1);
    // The guest's flags are not the host's concern: none are passed in.
    let (_, raised) = add(one, one, MXCSR_RESET | 0x3f);
    assert_eq!(raised, 0);
}
