//! The BCD adjustments over every input against the SDM's pseudo-code, transcribed step by
//! step. The result and the flags the SDM defines come from the transcription; those it leaves
//! undefined are checked against the documented choice: the flags of the addition or
//! subtraction the adjustment amounts to (from the reference model), and for AAM those of a
//! logical operation on AL.

use super::reference::{add, sub};
use super::{Rng, assert_flags, flag_names};
use crate::interp::alu::{
    AF, ARITH_FLAGS, CF, DivideError, OF, OpSize, PF, SF, ZF, aaa, aad, aam, aas, daa, das,
};

/// The flags an adjustment leaves: OF, SF, ZF and PF from `operation` (the addition or
/// subtraction it amounts to), CF and AF from the SDM.
fn adjusted(operation: (u64, u64), cf: bool, af: bool) -> u64 {
    (operation.1 & (OF | SF | ZF | PF)) | carry_aux(cf, af)
}

/// SF, ZF and PF of AL = `al`.
fn logic_flags(al: u8) -> u64 {
    let mut flags = 0;
    if al & 0x80 != 0 {
        flags |= SF;
    }
    if al == 0 {
        flags |= ZF;
    }
    if al.count_ones().is_multiple_of(2) {
        flags |= PF;
    }
    flags
}

fn carry_aux(cf: bool, af: bool) -> u64 {
    (if cf { CF } else { 0 }) | (if af { AF } else { 0 })
}

/// Every incoming RFLAGS to try with each AL or AX: all four CF/AF combinations, with the other
/// bits (OF included) random.
fn incoming(rng: &mut Rng) -> impl Iterator<Item = u64> + use<> {
    let other = rng.rflags() & !(CF | AF);
    [0, CF, AF, CF | AF]
        .into_iter()
        .map(move |bits| other | bits)
}

/// SDM: DAA. Its first step also sets CF to the old CF or the carry out of AL + 6, but the
/// second step sets or clears CF whichever way it goes.
fn daa_sdm(al: u8, cf: bool, af: bool) -> (u8, bool, bool) {
    let (old_al, old_cf) = (al, cf);
    let (mut al, cf, af_out);
    al = old_al;
    if (al & 0x0f) > 9 || af {
        al = al.wrapping_add(6);
        af_out = true;
    } else {
        af_out = false;
    }
    if old_al > 0x99 || old_cf {
        al = al.wrapping_add(0x60);
        cf = true;
    } else {
        cf = false;
    }
    (al, cf, af_out)
}

/// SDM: DAS.
fn das_sdm(al: u8, cf: bool, af: bool) -> (u8, bool, bool) {
    let (old_al, old_cf) = (al, cf);
    let (mut al, mut cf, af_out);
    cf = false;
    al = old_al;
    if (al & 0x0f) > 9 || af {
        let (difference, borrow) = al.overflowing_sub(6);
        al = difference;
        cf = old_cf || borrow;
        af_out = true;
    } else {
        af_out = false;
    }
    if old_al > 0x99 || old_cf {
        al = al.wrapping_sub(0x60);
        cf = true;
    }
    (al, cf, af_out)
}

/// SDM: AAA.
fn aaa_sdm(ax: u16, af: bool) -> (u16, bool, bool) {
    let mut ax = ax;
    let adjusted = (ax & 0x0f) > 9 || af;
    if adjusted {
        ax = ax.wrapping_add(0x106);
    }
    (ax & 0xff0f, adjusted, adjusted)
}

/// SDM: AAS.
fn aas_sdm(ax: u16, af: bool) -> (u16, bool, bool) {
    let [mut ah, mut al] = ax.to_be_bytes();
    let adjusted = (al & 0x0f) > 9 || af;
    if adjusted {
        [ah, al] = u16::from_be_bytes([ah, al]).wrapping_sub(6).to_be_bytes();
        ah = ah.wrapping_sub(1);
    }
    (u16::from_be_bytes([ah, al & 0x0f]), adjusted, adjusted)
}

#[test]
fn daa_and_das_every_input() {
    let mut rng = Rng::new(0xbcd);
    type Adjust = fn(u8, u64) -> (u8, u64);
    type Model = fn(u8, bool, bool) -> (u8, bool, bool);
    let pairs: [(&str, Adjust, Model); 2] = [("DAA", daa, daa_sdm), ("DAS", das, das_sdm)];
    for (name, adjust, model) in pairs {
        for al in 0..=u8::MAX {
            for rflags in incoming(&mut rng) {
                let (want_al, cf, af) = model(al, rflags & CF != 0, rflags & AF != 0);
                let (got_al, got_flags) = adjust(al, rflags);
                let context = format!("{name} {al:#04x} {}", flag_names(rflags));
                assert_eq!(got_al, want_al, "{context}");
                let (al, want_al) = (u64::from(al), u64::from(want_al));
                let operation = if name == "DAA" {
                    add(OpSize::Byte, al, want_al.wrapping_sub(al) & 0xff, 0)
                } else {
                    sub(OpSize::Byte, al, al.wrapping_sub(want_al) & 0xff, 0)
                };
                let want = adjusted(operation, cf, af);
                assert_flags(&context, rflags, got_flags, want, ARITH_FLAGS);
            }
        }
    }
}

#[test]
fn aaa_and_aas_every_input() {
    let mut rng = Rng::new(0xaaa);
    type Adjust = fn(u16, u64) -> (u16, u64);
    type Model = fn(u16, bool) -> (u16, bool, bool);
    let pairs: [(&str, Adjust, Model); 2] = [("AAA", aaa, aaa_sdm), ("AAS", aas, aas_sdm)];
    for (name, adjust, model) in pairs {
        for ax in 0..=u16::MAX {
            for rflags in incoming(&mut rng) {
                let (want_ax, cf, af) = model(ax, rflags & AF != 0);
                let (got_ax, got_flags) = adjust(ax, rflags);
                let context = format!("{name} {ax:#06x} {}", flag_names(rflags));
                assert_eq!(got_ax, want_ax, "{context}");
                let amount = if af { 0x106 } else { 0 };
                let operation = if name == "AAA" {
                    add(OpSize::Word, ax.into(), amount, 0)
                } else {
                    sub(OpSize::Word, ax.into(), amount, 0)
                };
                let want = adjusted(operation, cf, af);
                assert_flags(&context, rflags, got_flags, want, ARITH_FLAGS);
            }
        }
    }
}

#[test]
fn aam_every_input() {
    let mut rng = Rng::new(0xaa3);
    for base in 0..=u8::MAX {
        for al in 0..=u8::MAX {
            let rflags = rng.rflags() | OF;
            let got = aam(al, base, rflags);
            if base == 0 {
                assert_eq!(got, Err(DivideError), "AAM {al:#04x}, 0");
                continue;
            }
            // SDM: tempAL <- AL; AH <- tempAL / imm8; AL <- tempAL MOD imm8.
            let (ah, al_out) = (al / base, al % base);
            let (ax, got_flags) = got.expect("nonzero base");
            let context = format!("AAM {al:#04x}, {base}");
            assert_eq!(ax, u16::from(ah) << 8 | u16::from(al_out), "{context}");
            assert_flags(
                &context,
                rflags,
                got_flags,
                logic_flags(al_out),
                ARITH_FLAGS,
            );
        }
    }
}

#[test]
fn aad_every_input() {
    let mut rng = Rng::new(0xaad);
    for base in 0..=u8::MAX {
        let rflags = rng.rflags() | OF;
        for ax in 0..=u16::MAX {
            // SDM: AL <- (tempAL + (tempAH * imm8)) AND FFH; AH <- 0.
            let [ah, al] = ax.to_be_bytes();
            let al_out = ((u32::from(al) + u32::from(ah) * u32::from(base)) & 0xff) as u8;
            let (got_ax, got_flags) = aad(ax, base, rflags);
            assert_eq!(got_ax, u16::from(al_out), "AAD {ax:#06x}, {base}");
            let product = (u64::from(ah) * u64::from(base)) & 0xff;
            let (_, addition) = add(OpSize::Byte, al.into(), product, 0);
            let want_flags = (rflags & !ARITH_FLAGS) | addition;
            assert_eq!(got_flags, want_flags, "AAD {ax:#06x}, {base}: flags");
        }
    }
}
