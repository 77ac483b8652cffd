//! Dirty logging on the kvm backend: the guest's writes are logged by KVM, Umbra's own writes
//! by Umbra, and one get-and-clear returns the union of both.

use umbra::machine::{Machine, MachineConfig, RunEnd};
use umbra::memory_map::{SLOT_LOW_RAM, SLOT_RAM};
use umbra_cpu::backend::kvm::KvmHypervisor;
use umbra_mmu::addr::{Gpa, PAGE_SHIFT};
use umbra_mmu::memslot::MemslotFlags;

fn is_dirty(bitmap: &[u64], page: u64) -> bool {
    bitmap[(page / 64) as usize] & (1 << (page % 64)) != 0
}

#[test]
fn guest_and_host_writes_are_logged_and_cleared() {
    let Ok(kvm) = KvmHypervisor::new() else {
        eprintln!("skipped guest_and_host_writes_are_logged_and_cleared: /dev/kvm is not usable");
        return;
    };
    let config = MachineConfig {
        memory: "128M".parse().unwrap(),
        rom: umbra_firmware::find("demo").unwrap().rom,
        serial: Box::new(std::io::sink()),
    };
    let mut machine = Machine::new(&kvm, config).unwrap();
    let memslots = machine.memslots().clone();
    for slot in [SLOT_LOW_RAM, SLOT_RAM] {
        memslots.set_flags(slot, MemslotFlags::LOG_DIRTY).unwrap();
    }
    let outcome = machine.run().unwrap();
    assert_eq!(outcome.end, RunEnd::DebugExit { status: 0 });

    // The demo builds its page tables from 0x1000 up and writes the last quadword of a 2 MiB
    // page at 4 MiB; it never touches 64 MiB.
    let low = machine.vm().get_dirty_log(SLOT_LOW_RAM).unwrap();
    assert!(is_dirty(&low, 1), "page tables are logged");
    let ram_base = memslots.get(SLOT_RAM).unwrap().base_gfn().0;
    let page_in_ram = |addr: u64| (addr >> PAGE_SHIFT) - ram_base;
    let ram = machine.vm().get_dirty_log(SLOT_RAM).unwrap();
    assert!(
        is_dirty(&ram, page_in_ram(0x5f_f000)),
        "the 2 MiB page's last page is logged"
    );
    assert!(!is_dirty(&ram, page_in_ram(0x400_0000)));

    memslots.write(Gpa(0x400_0000), &[1, 2, 3]).unwrap();
    let ram = machine.vm().get_dirty_log(SLOT_RAM).unwrap();
    assert!(
        is_dirty(&ram, page_in_ram(0x400_0000)),
        "a host write is logged"
    );
    assert_eq!(
        ram.iter().map(|w| w.count_ones()).sum::<u32>(),
        1,
        "the log was cleared"
    );
    assert!(
        machine
            .vm()
            .get_dirty_log(SLOT_LOW_RAM)
            .unwrap()
            .iter()
            .all(|&w| w == 0)
    );
}
