//! The cost of a 4-level walk, printed (run with `--release -- --nocapture` for real figures).

use std::hint::black_box;
use std::time::Instant;

use umbra_mmu::addr::Gva;
use umbra_mmu::paging::PagingMode;
use umbra_mmu::walker::{Privilege, WalkMode};

use crate::support::*;

#[test]
fn four_level_walk_cost() {
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let gvas: Vec<u64> = (0..64).map(|i| 0x7f00_0000_0000 + i * 0x20_1000).collect();
    for &gva in &gvas {
        guest.map(
            PagingMode::Level4,
            cr3,
            gva,
            1,
            0x0abc_d000 | P | W | U,
            P | W | U,
        );
    }
    let walker = walker(LONG4, cr3);
    let access = write(Privilege::User);
    for &gva in &gvas {
        walker
            .walk(&guest.mem, Gva(gva), access, WalkMode::Update)
            .unwrap();
    }
    let rounds = 4000;
    for (name, mode) in [
        ("update, A/D already set", WalkMode::Update),
        ("probe", WalkMode::Probe),
    ] {
        let start = Instant::now();
        for _ in 0..rounds {
            for &gva in &gvas {
                black_box(
                    walker
                        .walk(&guest.mem, Gva(black_box(gva)), access, mode)
                        .unwrap(),
                );
            }
        }
        let per_walk = start.elapsed().as_nanos() as f64 / (rounds * gvas.len()) as f64;
        println!("4-level walk ({name}): {per_walk:.1} ns");
    }
}
