//! The data-movement instructions with an immediate or a mask, on lanes of XMM and MMX values:
//! shuffles, blends, alignment, byte shifts, inserts and extracts, sign masks. Pure functions;
//! a memory source is passed zero-extended.

/// All ones in the low `size` bytes.
pub(super) fn mask(size: usize) -> u128 {
    if size >= 16 {
        u128::MAX
    } else {
        (1 << (size * 8)) - 1
    }
}

/// Element `index` of `size` bytes of `value`.
pub(super) fn element(value: u128, size: usize, index: usize) -> u128 {
    (value >> (index * size * 8)) & mask(size)
}

/// `value` with element `index` of `size` bytes replaced by `element`.
pub(super) fn with_element(value: u128, size: usize, index: usize, element: u128) -> u128 {
    let shift = index * size * 8;
    (value & !(mask(size) << shift)) | ((element & mask(size)) << shift)
}

/// Builds a value of `count` elements of `size` bytes from `f(index)`.
fn from_elements(size: usize, count: usize, f: impl Fn(usize) -> u128) -> u128 {
    (0..count).fold(0, |value, index| with_element(value, size, index, f(index)))
}

/// The two-bit field `index` of `imm`.
fn select(imm: u8, index: usize) -> usize {
    usize::from((imm >> (2 * index)) & 3)
}

/// PSHUFD: each doubleword chosen from `src` by two bits of `imm`.
pub(super) fn pshufd(src: u128, imm: u8) -> u128 {
    from_elements(4, 4, |k| element(src, 4, select(imm, k)))
}

/// PSHUFLW: the low four words shuffled as PSHUFD shuffles doublewords, the high quadword
/// copied.
pub(super) fn pshuflw(src: u128, imm: u8) -> u128 {
    let low = from_elements(2, 4, |k| element(src, 2, select(imm, k)));
    (src & !mask(8)) | low
}

/// PSHUFHW: the high four words shuffled, the low quadword copied.
pub(super) fn pshufhw(src: u128, imm: u8) -> u128 {
    let high = from_elements(2, 4, |k| element(src >> 64, 2, select(imm, k)));
    (high << 64) | (src & mask(8))
}

/// PSHUFW: the four words of an MMX value shuffled.
pub(super) fn pshufw(src: u128, imm: u8) -> u128 {
    from_elements(2, 4, |k| element(src, 2, select(imm, k)))
}

/// SHUFPS: the low two doublewords chosen from `dst`, the high two from `src`.
pub(super) fn shufps(dst: u128, src: u128, imm: u8) -> u128 {
    from_elements(4, 4, |k| {
        let from = if k < 2 { dst } else { src };
        element(from, 4, select(imm, k))
    })
}

/// SHUFPD: the low quadword chosen from `dst`, the high one from `src`.
pub(super) fn shufpd(dst: u128, src: u128, imm: u8) -> u128 {
    let low = element(dst, 8, usize::from(imm & 1));
    let high = element(src, 8, usize::from((imm >> 1) & 1));
    (high << 64) | low
}

/// PALIGNR: `dst:src` (twice `width` bytes, `dst` high) shifted right by `imm` bytes, its low
/// `width` bytes (`width` 16 for XMM, 8 for MMX).
pub(super) fn palignr(dst: u128, src: u128, imm: u8, width: usize) -> u128 {
    let shift = usize::from(imm);
    let byte = |k: usize| {
        let at = k + shift;
        match at {
            _ if at < width => element(src, 1, at),
            _ if at < 2 * width => element(dst, 1, at - width),
            _ => 0,
        }
    };
    from_elements(1, width, byte)
}

/// PSLLDQ: `value` shifted left by `imm` bytes (zero past 15).
pub(super) fn pslldq(value: u128, imm: u8) -> u128 {
    if imm > 15 {
        0
    } else {
        value << (u32::from(imm) * 8)
    }
}

/// PSRLDQ: `value` shifted right by `imm` bytes (zero past 15).
pub(super) fn psrldq(value: u128, imm: u8) -> u128 {
    if imm > 15 {
        0
    } else {
        value >> (u32::from(imm) * 8)
    }
}

/// PBLENDW, BLENDPS and BLENDPD: element `k` of `size` bytes from `src` where bit `k` of
/// `imm` is set, else from `dst`.
pub(super) fn blend(dst: u128, src: u128, imm: u8, size: usize) -> u128 {
    from_elements(size, 16 / size, |k| {
        let from = if imm & (1 << k) != 0 { src } else { dst };
        element(from, size, k)
    })
}

/// PBLENDVB, BLENDVPS and BLENDVPD: element `k` of `size` bytes from `src` where the sign bit
/// of element `k` of `selector` (XMM0) is set, else from `dst`.
pub(super) fn blend_variable(dst: u128, src: u128, selector: u128, size: usize) -> u128 {
    from_elements(size, 16 / size, |k| {
        let from = if element(selector, size, k) >> (size * 8 - 1) != 0 {
            src
        } else {
            dst
        };
        element(from, size, k)
    })
}

/// MOVMSKPS, MOVMSKPD and PMOVMSKB: the sign bits of the `count` elements of `size` bytes.
pub(super) fn sign_mask(value: u128, size: usize, count: usize) -> u128 {
    (0..count).fold(0, |bits, k| {
        bits | ((element(value, size, k) >> (size * 8 - 1)) << k)
    })
}

/// MPSADBW: eight sums of absolute differences between four bytes of `src` (from doubleword
/// `imm[1:0]`) and a sliding window of `dst` (from byte `4 * imm[2]`).
pub(super) fn mpsadbw(dst: u128, src: u128, imm: u8) -> u128 {
    let source = usize::from(imm & 3) * 4;
    let window = usize::from((imm >> 2) & 1) * 4;
    from_elements(2, 8, |k| {
        (0..4)
            .map(|j| {
                let a = element(dst, 1, window + k + j) as i32;
                let b = element(src, 1, source + j) as i32;
                (a - b).unsigned_abs() as u128
            })
            .sum()
    })
}

/// INSERTPS: a doubleword (`src`'s element `imm[7:6]` for a register source, the doubleword
/// read for a memory one) into element `imm[5:4]` of `dst`, then the elements `imm[3:0]`
/// names zeroed.
pub(super) fn insertps(dst: u128, src: u128, imm: u8, register_source: bool) -> u128 {
    let value = if register_source {
        element(src, 4, usize::from(imm >> 6))
    } else {
        element(src, 4, 0)
    };
    let inserted = with_element(dst, 4, usize::from((imm >> 4) & 3), value);
    from_elements(4, 4, |k| {
        if imm & (1 << k) != 0 {
            0
        } else {
            element(inserted, 4, k)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: u128 = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100;

    #[test]
    fn shuffles_pick_the_elements_the_immediate_names() {
        assert_eq!(
            pshufd(BYTES, 0x1b),
            0x0302_0100_0706_0504_0b0a_0908_0f0e_0d0c
        );
        assert_eq!(
            pshuflw(BYTES, 0x1b),
            0x0f0e_0d0c_0b0a_0908_0100_0302_0504_0706
        );
        assert_eq!(
            pshufhw(BYTES, 0x1b),
            0x0908_0b0a_0d0c_0f0e_0706_0504_0302_0100
        );
        assert_eq!(pshufw(0x0706_0504_0302_0100, 0x00), 0x0100_0100_0100_0100);
        let high = shufps(BYTES, !BYTES, 0b00_01_10_11) >> 64;
        assert_eq!(high, element(!BYTES, 4, 1) | element(!BYTES, 4, 0) << 32);
        assert_eq!(shufpd(1 | (2 << 64), 3 | (4 << 64), 0b01), 3 << 64 | 2);
    }

    #[test]
    fn palignr_concatenates_destination_above_source() {
        let dst = u128::MAX;
        assert_eq!(
            palignr(dst, BYTES, 4, 16),
            (BYTES >> 32) | (u128::MAX << 96)
        );
        assert_eq!(palignr(dst, BYTES, 16, 16), dst);
        assert_eq!(palignr(dst, BYTES, 32, 16), 0);
        assert_eq!(palignr(0xffff, 0x0706_0504_0302_0100, 7, 8), 0xff_ff07);
        assert_eq!(palignr(0xffff, 0x0706_0504_0302_0100, 16, 8), 0);
    }

    #[test]
    fn byte_shifts_stop_at_sixteen() {
        assert_eq!(pslldq(BYTES, 1), BYTES << 8);
        assert_eq!(psrldq(BYTES, 15), 0x0f);
        assert_eq!(psrldq(BYTES, 16), 0);
        assert_eq!(pslldq(BYTES, 200), 0);
    }

    #[test]
    fn blends_take_the_source_where_selected() {
        assert_eq!(blend(0, u128::MAX, 0b1000_0001, 2), 0xffff << 112 | 0xffff);
        assert_eq!(blend(0, u128::MAX, 0b10, 8), u128::MAX << 64);
        let selector = 0x80 << 8;
        assert_eq!(blend_variable(0, u128::MAX, selector, 1), 0xff << 8);
        assert_eq!(blend_variable(0, u128::MAX, 1 << 127, 8), u128::MAX << 64);
    }

    #[test]
    fn sign_masks_collect_the_top_bits() {
        assert_eq!(sign_mask(0x8000_0000_0000_0080, 1, 16), 0x81);
        assert_eq!(sign_mask(1 << 127 | 1 << 31, 4, 4), 0b1001);
        assert_eq!(sign_mask(1 << 63, 8, 2), 0b01);
    }

    #[test]
    fn mpsadbw_sums_absolute_differences() {
        // Every byte of dst 5, source bytes 1, 2, 3, 4: |5-1|+|5-2|+|5-3|+|5-4| = 10.
        let dst = u128::from_le_bytes([5; 16]);
        let src = 0x0403_0201;
        assert_eq!(mpsadbw(dst, src, 0), from_elements(2, 8, |_| 10));
    }

    #[test]
    fn insertps_inserts_then_zeroes() {
        let dst = 0x4444_4444_3333_3333_2222_2222_1111_1111;
        let src = 0xdddd_dddd_cccc_cccc_bbbb_bbbb_aaaa_aaaa;
        // Source element 2 into element 1, then element 3 zeroed.
        let imm = (2 << 6) | (1 << 4) | 0b1000;
        assert_eq!(
            insertps(dst, src, imm, true),
            0x0000_0000_3333_3333_cccc_cccc_1111_1111
        );
        assert_eq!(
            insertps(dst, 0xeeee_eeee, imm, false) >> 32 & 0xffff_ffff,
            0xeeee_eeee
        );
    }
}
