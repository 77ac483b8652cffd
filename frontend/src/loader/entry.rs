//! The state a kernel is entered in: a flat GDT, identity-mapped paging for a 64-bit entry,
//! and the vCPU's registers, set through [`Vcpu::set_registers`] and
//! [`Vcpu::set_system_registers`] as a boot loader leaves them.
//!
//! The GDT follows Linux's boot protocol, whose selectors multiboot kernels accept as well:
//! a flat code segment at `__BOOT_CS` (0x10) and a flat data segment at `__BOOT_DS` (0x18).
//! For the 64-bit entry the code segment is a 64-bit one and the first 4 GiB are
//! identity-mapped with 2 MiB pages, as Firecracker sets up its 64-bit Linux entry
//! (`arch/x86_64/regs.rs`), there for 1 GiB.

use umbra_cpu::backend::{BackendError, Vcpu};
use umbra_cpu::state::{DescriptorTable, RFLAGS_FIXED, Registers, Segment};
use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::{MemslotError, Memslots};

/// Where the boot GDT is.
pub const GDT_ADDR: u64 = 0x500;
/// The flat code segment's selector (Linux's `__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// The flat data segment's selector (Linux's `__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;
/// Where the 64-bit entry's page tables begin: the PML4, then the PDPT, then one page
/// directory per GiB mapped.
pub const PAGE_TABLES_ADDR: u64 = 0x9000;
/// How much the 64-bit entry's page tables identity-map.
const IDENTITY_MAPPED_GIB: u64 = 4;

/// Page-table entry bits: present, writable, and (in a page directory) a 2 MiB page.
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_LARGE: u64 = 1 << 7;

/// CR0.PE, CR0.ET and CR0.PG.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// EFER.LME and EFER.LMA.
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The indexes of the general registers a boot protocol passes values in.
pub mod gpr {
    /// RAX.
    pub const RAX: usize = 0;
    /// RBX.
    pub const RBX: usize = 3;
    /// RSP.
    pub const RSP: usize = 4;
    /// RSI.
    pub const RSI: usize = 6;
}

/// The mode a kernel's entry point runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 32-bit protected mode, flat segments, paging off.
    Protected32,
    /// 64-bit mode, flat segments, the first 4 GiB identity-mapped.
    Long64,
}

/// A kernel's entry: its mode and the registers it starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// The mode.
    pub mode: EntryMode,
    /// RIP, RFLAGS (interrupts off) and the general registers the protocol passes values in.
    pub regs: Registers,
}

impl EntryState {
    /// An entry at `rip` in `mode` with `values` in the general registers (index, value),
    /// the others zero and interrupts off.
    pub fn new(mode: EntryMode, rip: u64, values: &[(usize, u64)]) -> EntryState {
        let mut regs = Registers {
            rip,
            rflags: RFLAGS_FIXED,
            ..Registers::default()
        };
        for &(index, value) in values {
            regs.gpr[index] = value;
        }
        EntryState { mode, regs }
    }

    /// Writes the GDT, and for a 64-bit entry the page tables, into guest memory.
    pub fn write_tables(&self, memslots: &Memslots) -> Result<(), MemslotError> {
        let gdt: Vec<u8> = [0, 0, descriptor(&self.code()), descriptor(&data_segment())]
            .iter()
            .flat_map(|entry| entry.to_le_bytes())
            .collect();
        memslots.write(Gpa(GDT_ADDR), &gdt)?;
        if self.mode == EntryMode::Long64 {
            memslots.write(Gpa(PAGE_TABLES_ADDR), &identity_page_tables())?;
        }
        Ok(())
    }

    /// Puts the vCPU in this state: registers, segments loaded from the boot GDT, control
    /// registers and EFER for the mode. The rest (TR, LDTR, the APIC base) stays as reset
    /// left it; the IDT is empty, so an exception before the kernel loads its own shuts the
    /// machine down.
    pub fn apply(&self, vcpu: &mut dyn Vcpu) -> Result<(), BackendError> {
        let mut sregs = vcpu.system_registers()?;
        let data = data_segment();
        sregs.cs = self.code();
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.gdt = DescriptorTable {
            base: GDT_ADDR,
            limit: 4 * 8 - 1,
        };
        sregs.idt = DescriptorTable { base: 0, limit: 0 };
        match self.mode {
            EntryMode::Protected32 => {
                sregs.cr0 = CR0_PE | CR0_ET;
                sregs.cr3 = 0;
                sregs.cr4 = 0;
                sregs.efer = 0;
            }
            EntryMode::Long64 => {
                sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
                sregs.cr3 = PAGE_TABLES_ADDR;
                sregs.cr4 = CR4_PAE;
                sregs.efer = EFER_LME | EFER_LMA;
            }
        }
        vcpu.set_system_registers(&sregs)?;
        vcpu.set_registers(&self.regs)
    }

    /// The flat code segment for this mode.
    fn code(&self) -> Segment {
        let long = self.mode == EntryMode::Long64;
        Segment {
            selector: BOOT_CS,
            type_: 0xb,
            l: long,
            db: !long,
            ..flat()
        }
    }
}

/// The flat read/write data segment.
fn data_segment() -> Segment {
    Segment {
        selector: BOOT_DS,
        type_: 0x3,
        db: true,
        ..flat()
    }
}

/// A present ring-0 code or data segment with base 0 and a 4 GiB limit.
fn flat() -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        s: true,
        present: true,
        g: true,
        ..Segment::default()
    }
}

/// The GDT descriptor of `segment` (a code or data segment with a base below 4 GiB).
fn descriptor(segment: &Segment) -> u64 {
    let limit = u64::from(if segment.g {
        segment.limit >> 12
    } else {
        segment.limit
    });
    let base = segment.base & 0xffff_ffff;
    let access = u64::from(segment.type_)
        | u64::from(segment.s) << 4
        | u64::from(segment.dpl) << 5
        | u64::from(segment.present) << 7;
    let flags = u64::from(segment.avl)
        | u64::from(segment.l) << 1
        | u64::from(segment.db) << 2
        | u64::from(segment.g) << 3;
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | access << 40
        | (limit >> 16 & 0xf) << 48
        | flags << 52
        | (base >> 24) << 56
}

/// The PML4, PDPT and page directories that identity-map the first
/// [`IDENTITY_MAPPED_GIB`] GiB with 2 MiB pages, laid out from [`PAGE_TABLES_ADDR`].
fn identity_page_tables() -> Vec<u8> {
    const PAGE: u64 = 0x1000;
    let pdpt = PAGE_TABLES_ADDR + PAGE;
    let directories = pdpt + PAGE;
    let mut entries = vec![0u64; (2 + IDENTITY_MAPPED_GIB as usize) * 512];
    entries[0] = pdpt | PTE_PRESENT | PTE_WRITABLE;
    for gib in 0..IDENTITY_MAPPED_GIB {
        entries[512 + gib as usize] = (directories + gib * PAGE) | PTE_PRESENT | PTE_WRITABLE;
    }
    for (n, entry) in entries[1024..].iter_mut().enumerate() {
        *entry = ((n as u64) << 21) | PTE_PRESENT | PTE_WRITABLE | PTE_LARGE;
    }
    entries
        .iter()
        .flat_map(|entry| entry.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_the_usual_flat_ones() {
        let long = EntryState::new(EntryMode::Long64, 0, &[]);
        let protected = EntryState::new(EntryMode::Protected32, 0, &[]);
        assert_eq!(descriptor(&long.code()), 0x00af_9b00_0000_ffff);
        assert_eq!(descriptor(&protected.code()), 0x00cf_9b00_0000_ffff);
        assert_eq!(descriptor(&data_segment()), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn page_tables_map_4_gib_one_to_one() {
        let tables = identity_page_tables();
        let entry = |n: usize| u64::from_le_bytes(tables[n * 8..n * 8 + 8].try_into().unwrap());
        assert_eq!(entry(0), 0xa003);
        assert_eq!(entry(512 + 3), 0xe003);
        assert_eq!(entry(1024), 0x83);
        assert_eq!(entry(1024 + 2047), (2047 << 21) | 0x83);
        assert_eq!(tables.len(), 6 * 4096);
    }
}
