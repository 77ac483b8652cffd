//! Kernel code's direct jumps and calls to other pages of the upper half chain straight to
//! their target's block, and stop doing so once the target's translation changes: a call
//! made from the same site after the page is remapped and INVLPG'd runs the new code.

mod common;

use std::sync::Arc;

use umbra_cpu::backend::emu::EmuOptions;
use umbra_jit::JitFactory;
use umbra_mmu::addr::Gpa;

/// The page tables mapping the top 2 MiB of the address space, 4 KiB pages each at the
/// frame of the same number: a PDPT, a page directory and a page table.
const UPPER_PDPT: u64 = 0x13000;
const UPPER_PD: u64 = 0x14000;
const UPPER_PT: u64 = 0x15000;
/// Where the top 2 MiB start (PML4 and PDPT entry 511 each, page directory entry 0).
const UPPER: u64 = 0xffff_ffff_c000_0000;
const PML4: u64 = 0x10000;
/// Present, writable, global.
const PAGE: u64 = 0x103;

/// Runs a loop at `UPPER + 0x1000` that calls `UPPER + 0x2000` 200 times, adding what it
/// returns in RAX to RBX; after the 100th call it maps that page to frame 5 and INVLPGs it.
/// Frame 2 returns 1, frame 5 returns 2. CR4.PGE on (`global`) makes the upper half's
/// translations shared between roots. Gives RBX and the far chains patched.
fn run(global: bool) -> (u64, u64) {
    let memslots = common::memory(0x30, 0x2000);
    memslots
        .write(Gpa(PML4 + 8 * 511), &(UPPER_PDPT | 3).to_le_bytes())
        .unwrap();
    memslots
        .write(Gpa(UPPER_PDPT + 8 * 511), &(UPPER_PD | 3).to_le_bytes())
        .unwrap();
    memslots
        .write(Gpa(UPPER_PD), &(UPPER_PT | 3).to_le_bytes())
        .unwrap();
    for n in 0..16u64 {
        memslots
            .write(Gpa(UPPER_PT + 8 * n), &((n << 12) | PAGE).to_le_bytes())
            .unwrap();
    }
    #[rustfmt::skip]
    let caller = [
        0xb9, 0xc8, 0x00, 0x00, 0x00,             // mov ecx, 200
        0x31, 0xdb,                               // xor ebx, ebx
        0xe8, 0xf4, 0x0f, 0x00, 0x00,             // 1: call UPPER + 0x2000
        0x48, 0x01, 0xc3,                         // add rbx, rax
        0x83, 0xf9, 0x65,                         // cmp ecx, 101
        0x75, 0x18,                               // jne 2f
        0x48, 0xc7, 0xc2, 0x10, 0x50, 0x01, 0x00, // mov rdx, UPPER_PT + 8 * 2
        0x48, 0xc7, 0x02, 0x03, 0x51, 0x00, 0x00, // mov qword [rdx], 0x5000 | PAGE
        0x48, 0xc7, 0xc2, 0x00, 0x20, 0x00, 0xc0, // mov rdx, UPPER + 0x2000
        0x0f, 0x01, 0x3a,                         // invlpg [rdx]
        0xff, 0xc9,                               // 2: dec ecx
        0x75, 0xd7,                               // jnz 1b
        0xf4,                                     // hlt
    ];
    memslots.write(Gpa(0x1000), &caller).unwrap();
    // mov eax, 1 or 2; ret
    memslots
        .write(Gpa(0x2000), &[0xb8, 1, 0, 0, 0, 0xc3])
        .unwrap();
    memslots
        .write(Gpa(0x5000), &[0xb8, 2, 0, 0, 0, 0xc3])
        .unwrap();
    let emu = EmuOptions {
        engine: Some(Arc::new(JitFactory { threshold: 0 })),
        ..EmuOptions::default()
    };
    let mut vcpu = common::vcpu(&emu, &memslots, UPPER + 0x1000, [0; 16]);
    if global {
        let mut system = vcpu.system_registers().unwrap();
        system.cr4 |= 0x80;
        vcpu.set_system_registers(&system).unwrap();
    }
    common::run_to_halt(&mut *vcpu, 100);
    let far_chains = vcpu
        .mmu_stats()
        .iter()
        .find(|(name, _)| *name == "jit_far_chains")
        .map_or(0, |&(_, n)| n);
    (vcpu.registers().unwrap().gpr[3], far_chains)
}

#[test]
fn a_far_chain_follows_its_target_page_to_a_new_frame_after_invlpg() {
    let (sum, far_chains) = run(true);
    assert_eq!(
        sum,
        100 + 2 * 100,
        "100 calls to frame 2, then 100 to frame 5"
    );
    assert!(
        far_chains >= 2,
        "the call was chained, then chained again after the INVLPG ({far_chains})"
    );
}

#[test]
fn without_global_pages_a_far_jump_goes_through_the_jump_cache() {
    let (sum, far_chains) = run(false);
    assert_eq!(
        sum,
        100 + 2 * 100,
        "100 calls to frame 2, then 100 to frame 5"
    );
    assert_eq!(far_chains, 0);
}
