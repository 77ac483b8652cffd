//! Several vCPU threads over one shadow MMU and shared guest memory: each faults, edits its
//! own page tables (zapping shadow entries every thread may be using), and switches between
//! its roots, while a table subtree shared by all stays in use. Every translation is checked
//! against a walk of the guest's tables. Prints translations per second with one and with two
//! threads (`cargo test --release -p umbra-mmu --test shadow_stress -- --nocapture`).

use std::sync::Arc;
use std::time::Instant;

use umbra_mmu::addr::{Gfn, Gpa, Gva};
use umbra_mmu::memslot::{HostMapping, MemslotFlags, Memslots, SlotId};
use umbra_mmu::role::{CR0_PG, CR0_WP, CR4_PAE, CpuRole, EFER_LMA, EFER_NXE};
use umbra_mmu::shadow::ShadowMmu;
use umbra_mmu::vcpu_mmu::VcpuMmu;
use umbra_mmu::walker::{Access, AccessKind, Privilege, WalkMode, Walker};

/// Operations each thread runs.
const OPERATIONS: u64 = 200_000;
/// Frames of the table subtree every thread shares: PDPT, PD, PT.
const SHARED: [u64; 3] = [4, 5, 6];
/// Data frames mapped by the shared PT.
const SHARED_DATA: u64 = 64;

/// The frames of thread `t`'s own tables: two PML4s, then PDPT, PD, PT.
fn own_frames(t: u64) -> [u64; 5] {
    let base = 16 + 8 * t;
    [base, base + 1, base + 2, base + 3, base + 4]
}

fn link(frame: u64) -> u64 {
    (frame << 12) | 0x67
}

/// Guest RAM with the shared subtree and, for each of `threads`, two PML4s whose entry 0 is
/// the shared subtree and entry 1 the thread's own.
fn memory(threads: u64) -> Arc<Memslots> {
    let memslots = Arc::new(Memslots::new());
    let ram = HostMapping::anonymous(16 << 20).unwrap();
    memslots
        .create(SlotId(0), Gfn(0), 4096, ram, 0, MemslotFlags::empty())
        .unwrap();
    let write = |frame: u64, index: u64, value: u64| {
        memslots
            .write_u64(Gpa((frame << 12) + 8 * index), value)
            .unwrap();
    };
    write(SHARED[0], 0, link(SHARED[1]));
    write(SHARED[1], 0, link(SHARED[2]));
    for n in 0..16 {
        write(SHARED[2], n, link(SHARED_DATA + n));
    }
    for t in 0..threads {
        let [pml4a, pml4b, pdpt, pd, pt] = own_frames(t);
        for pml4 in [pml4a, pml4b] {
            write(pml4, 0, link(SHARED[0]));
            write(pml4, 1, link(pdpt));
        }
        write(pdpt, 0, link(pd));
        write(pd, 0, link(pt));
        for n in 0..16 {
            write(pt, n, link(1024 + 64 * t + n));
        }
    }
    memslots
}

/// A tiny xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One vCPU thread's work; returns the translations it checked.
fn vcpu_thread(t: u64, memslots: Arc<Memslots>, shadow: Arc<ShadowMmu>) -> u64 {
    let [pml4a, pml4b, _, _, pt] = own_frames(t);
    let role = CpuRole::from_regs(CR0_PG | CR0_WP, CR4_PAE, EFER_LMA | EFER_NXE);
    let mut walker = Walker::new(40, true).unwrap();
    walker.set_role(role);
    walker.set_cr3(pml4a << 12);
    let mut mmu = VcpuMmu::new(walker, shadow, memslots.clone());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
    let mut checked = 0;
    for _ in 0..OPERATIONS {
        mmu.begin_instruction();
        let r = rng.next();
        match r % 16 {
            // Edit an entry of the thread's own PT: present or not, writable or not.
            0 => {
                let gpa = Gpa((pt << 12) + 8 * ((r >> 8) % 16));
                let frame = 1024 + 64 * t + (r >> 16) % 64;
                let value = (frame << 12) | ((r >> 24) & 0x7) | 0x60;
                memslots.write_u64(gpa, value).unwrap();
            }
            1 => {
                let cr3 = if r & 0x100 == 0 { pml4a } else { pml4b };
                mmu.set_cr3(cr3 << 12);
            }
            _ => {
                let region = (r >> 4) & 1;
                let gva = Gva((region << 39) | (((r >> 8) % 16) << 12) | ((r >> 20) & 0xfff));
                let kind = [AccessKind::Read, AccessKind::Write][((r >> 40) & 1) as usize];
                let access = Access::new(kind, Privilege::Supervisor);
                let walk = mmu
                    .walker()
                    .clone()
                    .walk(&*memslots, gva, access, WalkMode::Probe);
                let got = mmu.translate(gva, access);
                assert_eq!(
                    got.map(|m| m.gpa),
                    walk.map(|t| t.gpa),
                    "thread {t} at {gva:?}"
                );
                checked += 1;
            }
        }
    }
    checked
}

/// Runs `threads` vCPU threads over one shadow MMU; returns translations per second.
fn run(threads: u64) -> f64 {
    let memslots = memory(threads);
    let shadow = Arc::new(ShadowMmu::new());
    memslots.set_write_tracker(shadow.clone());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (memslots, shadow) = (memslots.clone(), shadow.clone());
            std::thread::spawn(move || vcpu_thread(t, memslots, shadow))
        })
        .collect();
    let checked: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    checked as f64 / start.elapsed().as_secs_f64()
}

#[test]
fn threads_faulting_zapping_and_switching_roots_agree_with_the_walker() {
    let one = run(1);
    let two = run(2);
    println!(
        "shadow MMU stress: 1 thread {one:.0} translations/s, 2 threads {two:.0} translations/s"
    );
}
