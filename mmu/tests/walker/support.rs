//! Guest memory and page-table building for the walker tests.

use std::cell::{Cell, RefCell};
use std::ops::Range;

use umbra_mmu::addr::{Gpa, Gva};
use umbra_mmu::paging::PagingMode;
use umbra_mmu::role::{CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CpuRole, EFER_LMA, EFER_NXE};
use umbra_mmu::walker::{Access, AccessKind, PageTableMemory, Privilege, Walker};

/// Little-endian guest RAM at 0..len; a range of it can be read-only (ROM).
pub struct TestMemory {
    bytes: RefCell<Vec<u8>>,
    rom: Range<u64>,
    /// Compare-exchanges that replaced an entry.
    pub writes: Cell<usize>,
}

impl TestMemory {
    pub fn new(len: usize) -> TestMemory {
        TestMemory {
            bytes: RefCell::new(vec![0; len]),
            rom: 0..0,
            writes: Cell::new(0),
        }
    }

    pub fn with_rom(len: usize, rom: Range<u64>) -> TestMemory {
        TestMemory {
            rom,
            ..TestMemory::new(len)
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.bytes.borrow().clone()
    }

    fn range(&self, gpa: Gpa, size: usize) -> Option<Range<usize>> {
        let start = usize::try_from(gpa.0).ok()?;
        let end = start.checked_add(size)?;
        (end <= self.bytes.borrow().len()).then_some(start..end)
    }

    pub fn read(&self, gpa: u64, size: usize) -> Option<u64> {
        let range = self.range(Gpa(gpa), size)?;
        let bytes = self.bytes.borrow();
        let mut buf = [0u8; 8];
        buf[..size].copy_from_slice(&bytes[range]);
        Some(u64::from_le_bytes(buf))
    }

    pub fn write(&self, gpa: u64, size: usize, value: u64) {
        let range = self.range(Gpa(gpa), size).expect("test write outside RAM");
        self.bytes.borrow_mut()[range].copy_from_slice(&value.to_le_bytes()[..size]);
    }

    pub fn write_u64(&self, gpa: u64, value: u64) {
        self.write(gpa, 8, value);
    }

    pub fn read_u64_raw(&self, gpa: u64) -> u64 {
        self.read(gpa, 8).expect("test read outside RAM")
    }

    fn cmpxchg(&self, gpa: Gpa, size: usize, old: u64, new: u64) -> Option<bool> {
        if self.rom.contains(&gpa.0) {
            return None;
        }
        if self.read(gpa.0, size)? != old {
            return Some(false);
        }
        self.write(gpa.0, size, new);
        self.writes.set(self.writes.get() + 1);
        Some(true)
    }
}

impl PageTableMemory for TestMemory {
    fn read_u32(&self, gpa: Gpa) -> Option<u32> {
        self.read(gpa.0, 4).map(|v| v as u32)
    }
    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        self.read(gpa.0, 8)
    }
    fn cmpxchg_u32(&self, gpa: Gpa, old: u32, new: u32) -> Option<bool> {
        self.cmpxchg(gpa, 4, old.into(), new.into())
    }
    fn cmpxchg_u64(&self, gpa: Gpa, old: u64, new: u64) -> Option<bool> {
        self.cmpxchg(gpa, 8, old, new)
    }
}

pub const P: u64 = 1;
pub const W: u64 = 2;
pub const U: u64 = 4;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const G: u64 = 1 << 8;
pub const NX: u64 = 1 << 63;

/// Guest RAM plus a bump allocator of zeroed page-table pages starting at 1 MiB.
pub struct Guest {
    pub mem: TestMemory,
    next_table: Cell<u64>,
}

pub const RAM: usize = 4 << 20;

impl Guest {
    pub fn new() -> Guest {
        Guest::with_memory(TestMemory::new(RAM))
    }

    pub fn with_memory(mem: TestMemory) -> Guest {
        Guest {
            mem,
            next_table: Cell::new(0x10_0000),
        }
    }

    pub fn alloc_table(&self) -> u64 {
        let page = self.next_table.get();
        self.next_table.set(page + 0x1000);
        page
    }

    /// Builds the path for `gva` below `root` (CR3's table; the PDPT in PAE paging) down to
    /// `leaf_level`, where it stores `leaf`. Missing intermediate entries point to new tables
    /// and carry `upper` flags (PAE PDPTEs only P). Returns the address of the entry at each
    /// level, indexed by level.
    pub fn map(
        &self,
        mode: PagingMode,
        root: u64,
        gva: u64,
        leaf_level: u8,
        leaf: u64,
        upper: u64,
    ) -> [u64; 6] {
        let size = mode.entry_size() as usize;
        let mut gpas = [0; 6];
        let mut table = root;
        let mut level = mode.root_level();
        loop {
            let gpa = table + mode.index(Gva(gva), level) * size as u64;
            gpas[usize::from(level)] = gpa;
            if level == leaf_level {
                self.mem.write(gpa, size, leaf);
                return gpas;
            }
            let mut entry = self.mem.read(gpa, size).unwrap();
            if entry & P == 0 {
                let flags = if mode == PagingMode::Pae && level == 3 {
                    P
                } else {
                    upper
                };
                entry = self.alloc_table() | flags;
                self.mem.write(gpa, size, entry);
            }
            table = entry & 0x000f_ffff_ffff_f000;
            level -= 1;
        }
    }
}

/// CR0, CR4 and EFER.
#[derive(Clone, Copy, Debug)]
pub struct Regs {
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl Regs {
    pub const fn with(self, cr0: u64, cr4: u64, efer: u64) -> Regs {
        Regs {
            cr0: self.cr0 | cr0,
            cr4: self.cr4 | cr4,
            efer: self.efer | efer,
        }
    }

    pub const fn without(self, cr0: u64, cr4: u64, efer: u64) -> Regs {
        Regs {
            cr0: self.cr0 & !cr0,
            cr4: self.cr4 & !cr4,
            efer: self.efer & !efer,
        }
    }

    pub fn role(self) -> CpuRole {
        CpuRole::from_regs(self.cr0, self.cr4, self.efer)
    }
}

pub const BITS32: Regs = Regs {
    cr0: CR0_PG | CR0_WP,
    cr4: 0,
    efer: 0,
};
pub const PAE: Regs = Regs {
    cr0: CR0_PG | CR0_WP,
    cr4: CR4_PAE,
    efer: EFER_NXE,
};
pub const LONG4: Regs = Regs {
    cr0: CR0_PG | CR0_WP,
    cr4: CR4_PAE,
    efer: EFER_LMA | EFER_NXE,
};
pub const LONG5: Regs = LONG4.with(0, CR4_LA57, 0);

/// A walker with MAXPHYADDR 36 and 1 GiB pages, in the role of `regs`, with CR3 = `cr3`.
pub fn walker(regs: Regs, cr3: u64) -> Walker {
    walker_with(36, true, regs, cr3)
}

pub fn walker_with(maxphyaddr: u8, gbpages: bool, regs: Regs, cr3: u64) -> Walker {
    let mut walker = Walker::new(maxphyaddr, gbpages).unwrap();
    walker.set_role(regs.role());
    walker.set_cr3(cr3);
    walker
}

/// The linear address most tests map: distinct indexes at every level.
pub const GVA: u64 = 0x0000_7f12_3456_7abc;

/// A 4-level guest with `GVA` mapped at `leaf_level` by `leaf` below entries with `upper`
/// flags, and a walker for `regs` (4-level or 5-level).
pub fn long_guest(regs: Regs, leaf_level: u8, leaf: u64, upper: u64) -> (Guest, Walker, [u64; 6]) {
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let walker = walker(regs, cr3);
    let mode = walker.role().paging_mode();
    let entries = guest.map(mode, cr3, GVA, leaf_level, leaf, upper);
    (guest, walker, entries)
}

/// A PAE guest with `gva` mapped like [`long_guest`], its PDPTE registers loaded.
pub fn pae_guest(
    regs: Regs,
    gva: u64,
    leaf_level: u8,
    leaf: u64,
    upper: u64,
) -> (Guest, Walker, [u64; 6]) {
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let mut walker = walker(regs, cr3);
    let entries = guest.map(PagingMode::Pae, cr3, gva, leaf_level, leaf, upper);
    walker.set_pdptrs(walker.load_pdptrs(cr3, &guest.mem).unwrap());
    (guest, walker, entries)
}

/// A 32-bit paging guest with `gva` mapped like [`long_guest`].
pub fn bits32_guest(
    regs: Regs,
    gva: u64,
    leaf_level: u8,
    leaf: u64,
    upper: u64,
) -> (Guest, Walker, [u64; 6]) {
    let guest = Guest::new();
    let cr3 = guest.alloc_table();
    let walker = walker(regs, cr3);
    let entries = guest.map(PagingMode::Bits32, cr3, gva, leaf_level, leaf, upper);
    (guest, walker, entries)
}

pub const fn read(privilege: Privilege) -> Access {
    Access::new(AccessKind::Read, privilege)
}
pub const fn write(privilege: Privilege) -> Access {
    Access::new(AccessKind::Write, privilege)
}
pub const fn fetch(privilege: Privilege) -> Access {
    Access::new(AccessKind::Fetch, privilege)
}
