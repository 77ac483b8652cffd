//! The page-table browser: the guest's tables under the current CR3, one table at a time.
//! A present entry that points to a table opens it; going back returns to the table above;
//! "go to" follows a virtual address down to its frame, as the walker does.
//!
//! Entries are read from guest memory each time the view is built, so the browser shows the
//! tables as they are now (for PAE, the top table is read from memory at CR3, which the PDPTE
//! registers were loaded from).

use umbra_mmu::addr::{Gpa, Gva};
use umbra_mmu::memslot::Memslots;
use umbra_mmu::paging::{PTE_PAGE_SIZE, PTE_PRESENT, PagingMode, level_shift};
use umbra_mmu::walker::{Access, AccessKind, Privilege, WalkMode, Walker};

use crate::inspect::{entry_flags, entry_name, page_size_name};

/// Physical-address bits of an 8-byte entry.
const ADDRESS_64: u64 = 0x000f_ffff_ffff_f000;
/// Physical-address bits of a 4-byte entry.
const ADDRESS_32: u64 = 0xffff_f000;
/// Bits 31:5 of CR3 in PAE paging.
const PAE_PDPT: u64 = 0xffff_ffe0;

/// One table on the way down: where it is, its level, the first address it maps, and the
/// entry selected in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Table {
    gpa: u64,
    level: u8,
    base: u64,
    /// The index of the selected entry.
    selected: usize,
}

/// One entry as the browser lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserRow {
    /// Its index in the table.
    pub index: usize,
    /// Its value.
    pub value: u64,
    /// The first virtual address it maps.
    pub va: u64,
    /// What it points to: "table 0x...", "4 KiB page 0x...".
    pub target: String,
    /// Its flags.
    pub flags: String,
}

/// What the browser pane shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserView {
    /// Where the table is: `CR3 0x1000 > PML4E[0] > PDPTE[3]`.
    pub path: String,
    /// The table's present entries.
    pub rows: Vec<BrowserRow>,
    /// The selected row.
    pub selected: usize,
    /// The result of the last "go to", if any.
    pub note: Option<String>,
}

/// The browser's place in the tables.
pub struct Browser {
    mode: PagingMode,
    cr3: u64,
    tables: Vec<Table>,
    note: Option<String>,
}

impl Browser {
    /// A browser at the top table of `walker`'s paging state, or why there is none.
    pub fn open(walker: &Walker) -> Result<Browser, String> {
        let mode = walker.role().paging_mode();
        let cr3 = walker.cr3();
        let (gpa, level) = match mode {
            PagingMode::None => return Err("paging is off: there are no page tables".to_owned()),
            PagingMode::Bits32 => (cr3 & ADDRESS_32, 2),
            PagingMode::Pae => (cr3 & PAE_PDPT, 3),
            PagingMode::Level4 => (cr3 & ADDRESS_64, 4),
            PagingMode::Level5 => (cr3 & ADDRESS_64, 5),
        };
        Ok(Browser {
            mode,
            cr3,
            tables: vec![Table {
                gpa,
                level,
                base: 0,
                selected: 0,
            }],
            note: None,
        })
    }

    fn current(&self) -> Table {
        *self.tables.last().expect("the top table is never left")
    }

    /// The number of entries in the current table.
    fn entries(&self, table: Table) -> usize {
        match (self.mode, table.level) {
            (PagingMode::Pae, 3) => 4,
            (PagingMode::Bits32, _) => 1024,
            _ => 512,
        }
    }

    /// How many address bits one entry of `level` maps.
    fn shift(&self, level: u8) -> u32 {
        match self.mode {
            PagingMode::Bits32 => 12 + 10 * (u32::from(level) - 1),
            _ => level_shift(level),
        }
    }

    /// Entry `index` of `table`: its value, if memory holds it.
    fn entry(&self, memory: &Memslots, table: Table, index: usize) -> Option<u64> {
        let size = self.mode.entry_size();
        let mut bytes = [0; 8];
        let at = Gpa(table.gpa + index as u64 * size);
        memory.read(at, &mut bytes[..size as usize]).ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// Whether `value` at `level` maps a page rather than pointing to a table.
    fn is_leaf(&self, level: u8, value: u64) -> bool {
        let large = match self.mode {
            PagingMode::Bits32 => level == 2,
            PagingMode::Pae => level == 2,
            _ => level == 2 || level == 3,
        };
        level == 1 || (large && value & PTE_PAGE_SIZE != 0)
    }

    /// The virtual address entry `index` of `table` starts at, canonical.
    fn address(&self, table: Table, index: usize) -> u64 {
        let va = table.base | (index as u64) << self.shift(table.level);
        let top = match self.mode {
            PagingMode::Level5 => 56,
            PagingMode::Level4 => 47,
            _ => return va,
        };
        if va >> top & 1 != 0 {
            va | !((1 << top) - 1)
        } else {
            va
        }
    }

    /// Where a leaf entry's page or a table entry's table is.
    fn target(&self, level: u8, value: u64) -> (String, u64) {
        let mask = if self.mode == PagingMode::Bits32 {
            ADDRESS_32
        } else {
            ADDRESS_64
        };
        if !self.is_leaf(level, value) {
            return (format!("table {:#x}", value & mask), value & mask);
        }
        let page_bits = self.shift(level);
        let frame = value & mask & !((1 << page_bits) - 1);
        let size = match (self.mode, level) {
            (_, 1) => "4 KiB",
            (PagingMode::Bits32, _) => "4 MiB",
            (_, 2) => "2 MiB",
            _ => "1 GiB",
        };
        (format!("{size} page {frame:#x}"), frame)
    }

    /// The view of the current table.
    pub fn view(&self, memory: &Memslots) -> BrowserView {
        let table = self.current();
        let rows: Vec<BrowserRow> = (0..self.entries(table))
            .filter_map(|index| {
                let value = self.entry(memory, table, index)?;
                (value & PTE_PRESENT != 0).then(|| BrowserRow {
                    index,
                    value,
                    va: self.address(table, index),
                    target: self.target(table.level, value).0,
                    flags: entry_flags(value),
                })
            })
            .collect();
        let selected = rows
            .iter()
            .position(|row| row.index >= table.selected)
            .unwrap_or(rows.len().saturating_sub(1));
        let mut path = format!("CR3 {:#x}", self.cr3);
        for pair in self.tables.windows(2) {
            path.push_str(&format!(
                " > {}[{}]",
                entry_name(pair[0].level),
                pair[0].selected
            ));
        }
        BrowserView {
            path,
            rows,
            selected,
            note: self.note.clone(),
        }
    }

    /// Moves the selection by `rows` present entries.
    pub fn select_by(&mut self, memory: &Memslots, rows: isize) {
        let view = self.view(memory);
        if let Some(row) = view
            .selected
            .checked_add_signed(rows)
            .map(|at| at.min(view.rows.len().saturating_sub(1)))
            .and_then(|at| view.rows.get(at))
        {
            self.tables.last_mut().expect("a top table").selected = row.index;
        }
    }

    /// Opens the table the selected entry points to; false if it maps a page.
    pub fn enter(&mut self, memory: &Memslots) -> bool {
        let view = self.view(memory);
        let table = self.current();
        let Some(row) = view.rows.get(view.selected) else {
            return false;
        };
        if self.is_leaf(table.level, row.value) {
            return false;
        }
        self.tables.last_mut().expect("a top table").selected = row.index;
        self.tables.push(Table {
            gpa: self.target(table.level, row.value).1,
            level: table.level - 1,
            base: row.va,
            selected: 0,
        });
        true
    }

    /// Returns to the table above; false at the top.
    pub fn leave(&mut self) -> bool {
        if self.tables.len() == 1 {
            return false;
        }
        self.tables.pop();
        true
    }

    /// Follows `va` down the tables as far as they go, and notes where it ends.
    pub fn go_to(&mut self, memory: &Memslots, walker: &Walker, va: u64) {
        self.tables.truncate(1);
        loop {
            let table = self.current();
            let index = (va >> self.shift(table.level)) as usize % self.entries(table);
            self.tables.last_mut().expect("a top table").selected = index;
            let present = self
                .entry(memory, table, index)
                .is_some_and(|value| value & PTE_PRESENT != 0);
            if !present || !self.enter(memory) {
                break;
            }
        }
        let access = Access::new(AccessKind::Read, Privilege::Supervisor);
        let result = walker.walk(memory, Gva(va), access, WalkMode::Probe);
        self.note = Some(match result {
            Ok(translation) => format!(
                "{va:#x} -> physical {:#x} ({} page)",
                translation.gpa.0,
                page_size_name(translation.page_size)
            ),
            Err(fault) => format!("{va:#x} -> #PF, error code {:#x}", fault.error_code),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use umbra_mmu::memslot::MemslotFlags;
    use umbra_mmu::paging::PTE_WRITABLE;
    use umbra_mmu::role::{CR0_PG, CR4_PAE, CpuRole, EFER_LMA};

    use super::*;

    /// 4-level tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD) mapping 0x20_0000 with a
    /// 2 MiB page and 0x40_0000 through the page table at 0x4000.
    fn tables() -> (Arc<Memslots>, Walker) {
        let memory = Arc::new(Memslots::new());
        let ram = umbra_mmu::memslot::HostMapping::anonymous(0x10_0000).unwrap();
        memory
            .create(
                umbra_mmu::memslot::SlotId(0),
                umbra_mmu::addr::Gfn(0),
                256,
                ram,
                0,
                MemslotFlags::empty(),
            )
            .unwrap();
        let link = PTE_PRESENT | PTE_WRITABLE;
        for (at, value) in [
            (0x1000, 0x2000 | link),
            (0x2000, 0x3000 | link),
            (0x3000 + 8, 0x20_0000 | link | PTE_PAGE_SIZE),
            (0x3000 + 16, 0x4000 | link),
            (0x4000 + 5 * 8, 0x9000 | link),
        ] {
            memory.write_u64(Gpa(at), value).unwrap();
        }
        let mut walker = Walker::new(40, true).unwrap();
        walker.set_role(CpuRole::from_regs(CR0_PG | 1, CR4_PAE, EFER_LMA));
        walker.set_cr3(0x1000);
        (memory, walker)
    }

    #[test]
    fn entries_open_into_tables_down_to_pages() {
        let (memory, walker) = tables();
        let mut browser = Browser::open(&walker).unwrap();
        let top = browser.view(&memory);
        assert_eq!(top.path, "CR3 0x1000");
        assert_eq!(top.rows.len(), 1);
        assert_eq!(top.rows[0].target, "table 0x2000");
        assert!(browser.enter(&memory));
        assert!(browser.enter(&memory));
        let pd = browser.view(&memory);
        assert_eq!(pd.path, "CR3 0x1000 > PML4E[0] > PDPTE[0]");
        assert_eq!(pd.rows[0].target, "2 MiB page 0x200000");
        assert_eq!(pd.rows[0].va, 0x20_0000);
        assert!(!browser.enter(&memory), "a 2 MiB page has no table below");
        browser.select_by(&memory, 1);
        assert!(browser.enter(&memory));
        let pt = browser.view(&memory);
        assert_eq!(pt.rows[0].va, 0x40_5000);
        assert_eq!(pt.rows[0].flags, "P W");
        assert!(browser.leave());
        assert_eq!(browser.view(&memory).selected, 1);
    }

    #[test]
    fn go_to_follows_an_address_to_its_frame() {
        let (memory, walker) = tables();
        let mut browser = Browser::open(&walker).unwrap();
        browser.go_to(&memory, &walker, 0x40_5123);
        let view = browser.view(&memory);
        assert_eq!(view.path, "CR3 0x1000 > PML4E[0] > PDPTE[0] > PDE[2]");
        assert_eq!(view.rows[view.selected].index, 5);
        assert_eq!(
            view.note.as_deref(),
            Some("0x405123 -> physical 0x9123 (4 KiB page)")
        );
        browser.go_to(&memory, &walker, 0x7000_0000);
        assert_eq!(browser.view(&memory).path, "CR3 0x1000 > PML4E[0]");
        assert!(browser.view(&memory).note.unwrap().contains("#PF"));
    }
}
