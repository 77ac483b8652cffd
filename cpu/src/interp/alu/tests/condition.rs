//! The sixteen conditions against the host's own SETcc, for every combination of the
//! arithmetic flags; this also checks that the guest's flags reach the host and come back
//! unchanged.

use super::Rng;
use crate::interp::alu::native::with_guest_flags;
use crate::interp::alu::{AF, ARITH_FLAGS, CF, OF, PF, SF, ZF, condition};

/// What the host's SETcc says about condition `cc` under `rflags`.
fn host_condition(cc: u8, rflags: u64) -> bool {
    macro_rules! setcc {
        ($($mnemonic:literal),+) => {
            [$(|rflags: u64| {
                let mut flags = rflags;
                let result: u8;
                with_guest_flags!(flags, [concat!($mnemonic, " {r}")], r = out(reg_byte) result);
                // SETcc writes no flag: what comes back is exactly what was loaded.
                assert_eq!(flags, rflags & ARITH_FLAGS, "flags loaded and read back");
                result != 0
            }),+]
        };
    }
    let conditions: [fn(u64) -> bool; 16] = setcc!(
        "seto", "setno", "setb", "setae", "sete", "setne", "setbe", "seta", "sets", "setns",
        "setp", "setnp", "setl", "setge", "setle", "setg"
    );
    conditions[usize::from(cc)](rflags)
}

#[test]
fn conditions_match_the_host() {
    let mut rng = Rng::new(0xc0de);
    let flag_bits = [OF, SF, ZF, AF, PF, CF];
    for combination in 0..1u64 << flag_bits.len() {
        let arith = (0..flag_bits.len())
            .filter(|bit| combination >> bit & 1 == 1)
            .fold(0, |all, bit| all | flag_bits[bit]);
        let rflags = (rng.rflags() & !ARITH_FLAGS) | arith;
        for cc in 0..16 {
            assert_eq!(
                condition(cc, rflags),
                host_condition(cc, rflags),
                "condition {cc:#x} with {}",
                super::flag_names(rflags)
            );
            // Only the low four bits select the condition.
            assert_eq!(condition(cc | 0x70, rflags), condition(cc, rflags));
        }
    }
}
