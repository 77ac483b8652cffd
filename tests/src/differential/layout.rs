//! The tiny machine a sequence runs in: guest memory laid out by hand, with no firmware.
//!
//! Guest physical memory is one RAM slot of [`RAM_SIZE`] bytes. In the IA-32e modes, paging
//! maps it one to one (linear = physical) with 4 KiB pages whose permissions make the regions
//! below; everything else, including page 0, is not present. Legacy protected mode runs with
//! paging off (PVM cannot run CPL 3 code under 32-bit paging), where segment limits keep the
//! sequence inside its 64 KiB segments:
//!
//! ```text
//!   0x01000  GDT                        supervisor
//!   0x02000  IDT (vectors 0-31)         supervisor
//!   0x03000  TSS                        supervisor
//!   0x04000  page tables                supervisor
//!   0x08000  exception handlers         supervisor, CPL 0 code
//!   0x09000  kernel stack (top 0xa000)  supervisor
//!   0x10000  the sequence, 2 pages      user, read-only
//!   0x20000  data, 2 pages              user, read/write (the user stack is in here too)
//!   0x22000  one page                   user, read-only
//!   0x23000  one page                   not present
//!   0x24000  one page                   supervisor
//! ```
//!
//! The sequence runs at CPL 3 and ends with INT3. The handler of exception vector `v` is
//! `out 0xc0 + v, al; hlt` at CPL 0: the port names the vector, and no register but RIP, RSP,
//! RFLAGS, CS and SS changes; the state the sequence left is in those registers and in the
//! frame on the kernel stack (RIP, CS, RFLAGS, RSP, SS and the error code), which
//! [`super::compare`] reads back. The sequence cannot simply write a port at the end: PVM
//! runs CPL 3 code with the host's IOPL of 0 whatever the guest's RFLAGS say (and reports
//! that IOPL back), so a CPL 3 `out` always raises #GP there, and so IOPL stays 0 here. Every
//! descriptor is written with its accessed bit (and the TSS's busy bit) set, and every page
//! table entry with its accessed and dirty bits set: the processor may set those bits early
//! (speculatively), which makes them no oracle, and with them preset the page tables are the
//! same bytes before and after every run, so a backend that caches them never sees them change.

use umbra_cpu::interp::segmentation::Descriptor;
use umbra_cpu::state::{DescriptorTable, Registers, Segment, SystemRegisters};

/// The size of guest RAM, from physical address 0.
pub const RAM_SIZE: usize = 0x40000;
/// The GDT.
pub const GDT: u64 = 0x1000;
/// The IDT.
pub const IDT: u64 = 0x2000;
/// The TSS.
pub const TSS: u64 = 0x3000;
/// The PML4 of the IA-32e modes.
pub const PAGE_TABLE_ROOT: u64 = 0x4000;
/// The exception handlers: vector `v`'s at `HANDLERS + 4 * v`.
pub const HANDLERS: u64 = 0x8000;
/// The top of the kernel stack exceptions are delivered on.
pub const KERNEL_STACK_TOP: u64 = 0xa000;
/// The sequence's code.
pub const CODE: u64 = 0x10000;
/// The bytes of code space.
pub const CODE_SIZE: u64 = 0x2000;
/// The read/write data region.
pub const DATA: u64 = 0x20000;
/// The bytes of the read/write data region.
pub const DATA_SIZE: u64 = 0x2000;
/// A user page that is read-only.
pub const READ_ONLY: u64 = 0x22000;
/// A page that is not present.
pub const NOT_PRESENT: u64 = 0x23000;
/// A page only CPL 0 may touch.
pub const SUPERVISOR: u64 = 0x24000;
/// The vector the sequence ends with: its last instruction is INT3, whose gate alone has
/// DPL 3, and which the generator never emits elsewhere.
pub const END_VECTOR: u8 = 3;
/// The handler of vector `v` writes port `VECTOR_PORT_BASE + v`.
pub const VECTOR_PORT_BASE: u16 = 0xc0;
/// The exception vectors with a handler.
pub const VECTORS: u8 = 32;

/// GDT selectors.
mod selector {
    pub const KERNEL_CODE64: u16 = 0x08;
    pub const KERNEL_DATA: u16 = 0x10;
    pub const KERNEL_CODE32: u16 = 0x18;
    pub const USER_CODE64: u16 = 0x20 | 3;
    pub const USER_DATA: u16 = 0x28 | 3;
    pub const USER_CODE32: u16 = 0x30 | 3;
    pub const USER_CODE16: u16 = 0x38 | 3;
    pub const USER_DATA16: u16 = 0x40 | 3;
    pub const TSS: u16 = 0x48;
    /// The GDT's size in bytes: the 64-bit TSS descriptor takes two slots.
    pub const GDT_BYTES: u16 = 0x58;
}

/// The CPU mode a sequence runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// IA-32e mode, 64-bit code segment (CS.L = 1), 4-level paging.
    Long64,
    /// IA-32e mode, 32-bit compatibility-mode code segment (CS.L = 0, CS.D = 1).
    Compat32,
    /// Legacy protected mode with paging off and a 16-bit code segment (CS.D = 0); CS, DS,
    /// ES, FS, GS and SS have 64 KiB limits, CS based at [`CODE`], the others at [`DATA`].
    Protected16,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::Long64, Mode::Compat32, Mode::Protected16];

    /// The default operand and address size of the code, as iced-x86 takes it.
    pub fn bitness(self) -> u32 {
        match self {
            Mode::Long64 => 64,
            Mode::Compat32 => 32,
            Mode::Protected16 => 16,
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Long64 => "64-bit",
            Mode::Compat32 => "compatibility",
            Mode::Protected16 => "16-bit protected",
        }
    }

    /// The IA-32e modes use 64-bit IDT gates and 4-level paging.
    fn ia32e(self) -> bool {
        self != Mode::Protected16
    }

    /// The linear address of code offset 0 (the base of CS).
    pub fn code_base(self) -> u64 {
        match self {
            Mode::Protected16 => CODE,
            _ => 0,
        }
    }

    /// The linear address of data offset 0 (the base of DS, ES, FS, GS and SS).
    pub fn data_base(self) -> u64 {
        match self {
            Mode::Protected16 => DATA,
            _ => 0,
        }
    }

    /// The RIP of the sequence's first instruction.
    pub fn entry(self) -> u64 {
        CODE - self.code_base()
    }

    /// The offset (in the data segment) that `linear` has.
    pub fn data_offset(self, linear: u64) -> u64 {
        linear - self.data_base()
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Page-table entry bits.
mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// What every table above the last level grants: everything, so the last level decides.
    pub const TABLE: u64 = PRESENT | WRITABLE | USER | ACCESSED;
}

/// The permissions of 4 KiB page `page` (a physical page number), or `None` if not present.
fn page_permissions(page: u64) -> Option<u64> {
    use pte::*;
    let supervisor = PRESENT | WRITABLE | ACCESSED | DIRTY;
    let address = page << 12;
    match address {
        GDT..KERNEL_STACK_TOP => Some(supervisor),
        CODE..DATA if address < CODE + CODE_SIZE => Some(PRESENT | USER | ACCESSED | DIRTY),
        DATA..READ_ONLY => Some(supervisor | USER),
        READ_ONLY => Some(PRESENT | USER | ACCESSED | DIRTY),
        SUPERVISOR => Some(supervisor),
        _ => None,
    }
}

/// A code or data segment descriptor. `access` is the access byte (P, DPL, S, type), `flags`
/// the nibble of G, D/B, L and AVL.
const fn descriptor(base: u64, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit >> 16) as u64 & 0xf) << 48)
        | ((flags as u64 & 0xf) << 52)
        | (((base >> 24) & 0xff) << 56)
}

/// Access bytes: present, DPL, code/data, type (with the accessed bit).
const ACCESS_KERNEL_CODE: u8 = 0x9b;
const ACCESS_KERNEL_DATA: u8 = 0x93;
const ACCESS_USER_CODE: u8 = 0xfb;
const ACCESS_USER_DATA: u8 = 0xf3;
/// A present, busy 32- or 64-bit TSS.
const BUSY_TSS: u8 = 0x8b;
/// Flags nibbles.
const G: u8 = 0x8;
const DB: u8 = 0x4;
const L: u8 = 0x2;

/// The GDT, by selector index.
fn gdt() -> [(u16, u64); 9] {
    use selector::*;
    [
        (
            KERNEL_CODE64,
            descriptor(0, 0xf_ffff, ACCESS_KERNEL_CODE, G | L),
        ),
        (
            KERNEL_DATA,
            descriptor(0, 0xf_ffff, ACCESS_KERNEL_DATA, G | DB),
        ),
        (
            KERNEL_CODE32,
            descriptor(0, 0xf_ffff, ACCESS_KERNEL_CODE, G | DB),
        ),
        (
            USER_CODE64,
            descriptor(0, 0xf_ffff, ACCESS_USER_CODE, G | L),
        ),
        (USER_DATA, descriptor(0, 0xf_ffff, ACCESS_USER_DATA, G | DB)),
        (
            USER_CODE32,
            descriptor(0, 0xf_ffff, ACCESS_USER_CODE, G | DB),
        ),
        (USER_CODE16, descriptor(CODE, 0xffff, ACCESS_USER_CODE, 0)),
        (USER_DATA16, descriptor(DATA, 0xffff, ACCESS_USER_DATA, 0)),
        (TSS, descriptor(TSS_BASE, 0x67, BUSY_TSS, 0)),
    ]
}

/// [`TSS`], for use in constant expressions above.
const TSS_BASE: u64 = TSS;

/// The descriptor at `selector` in [`gdt`], as a segment register loads it.
fn segment(selector: u16) -> Segment {
    let (_, raw) = gdt()
        .into_iter()
        .find(|(s, _)| s & !3 == selector & !3)
        .expect("a selector of the GDT");
    Descriptor(raw).to_segment(selector)
}

/// The initial memory image of a mode: RAM_SIZE bytes, the code and data regions still zero.
pub fn memory_image(mode: Mode) -> Vec<u8> {
    let mut ram = vec![0u8; RAM_SIZE];
    let mut put = |address: u64, bytes: &[u8]| {
        ram[address as usize..address as usize + bytes.len()].copy_from_slice(bytes);
    };
    for (selector, raw) in gdt() {
        put(GDT + u64::from(selector & !7), &raw.to_le_bytes());
    }
    // A 64-bit TSS descriptor's high half (base bits 63:32) is zero, as RAM already is. The
    // TSS's I/O bitmap base (offset 102) lies past its limit: there is no bitmap.
    let mut tss = [0u8; 104];
    if mode.ia32e() {
        // RSP0 at offset 4.
        tss[4..12].copy_from_slice(&KERNEL_STACK_TOP.to_le_bytes());
    } else {
        // ESP0 at offset 4, SS0 at 8.
        tss[4..8].copy_from_slice(&(KERNEL_STACK_TOP as u32).to_le_bytes());
        tss[8..10].copy_from_slice(&selector::KERNEL_DATA.to_le_bytes());
    }
    tss[102..104].copy_from_slice(&104u16.to_le_bytes());
    put(TSS, &tss);
    let (handler_selector, gate_size) = if mode.ia32e() {
        (selector::KERNEL_CODE64, 16)
    } else {
        (selector::KERNEL_CODE32, 8)
    };
    for vector in 0..VECTORS {
        let handler = HANDLERS + 4 * u64::from(vector);
        // out imm8, al; hlt
        let port = VECTOR_PORT_BASE as u8 + vector;
        put(handler, &[0xe6, port, 0xf4]);
        // A present interrupt gate, DPL 0 (DPL 3 for INT3). A 64-bit gate's high half
        // (offset bits 63:32) is zero.
        let gate_type: u64 = if vector == END_VECTOR { 0xee } else { 0x8e };
        let gate = (handler & 0xffff)
            | (u64::from(handler_selector) << 16)
            | (gate_type << 40)
            | ((handler & 0xffff_0000) << 32);
        put(IDT + gate_size * u64::from(vector), &gate.to_le_bytes());
    }
    if mode.ia32e() {
        // PML4 -> PDPT -> PD -> PT, each with one entry, covering the first 2 MiB.
        for level in 0..3 {
            let table = PAGE_TABLE_ROOT + level * 0x1000;
            put(table, &((table + 0x1000) | pte::TABLE).to_le_bytes());
        }
        let last_level = PAGE_TABLE_ROOT + 0x3000;
        for page in 0..(RAM_SIZE as u64 >> 12) {
            if let Some(permissions) = page_permissions(page) {
                put(
                    last_level + 8 * page,
                    &((page << 12) | permissions).to_le_bytes(),
                );
            }
        }
    }
    ram
}

/// CR0: PE, MP, ET, NE, WP, PG. Not AM: PVM drops RFLAGS.AC at CPL 3 (see
/// [`super::deviations`]), so alignment checking could not be compared anyway.
const CR0: u64 = 0x8001_0033;
/// CR0.PG.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// EFER: LME, LMA, NXE.
const EFER_IA32E: u64 = 0xd00;

/// The system registers of a mode, over `base`: a vCPU's own registers, whose fields this
/// harness does not set (APIC base, CR8) are kept.
pub fn system_registers(mode: Mode, base: &SystemRegisters) -> SystemRegisters {
    let (cs, data) = match mode {
        Mode::Long64 => (selector::USER_CODE64, selector::USER_DATA),
        Mode::Compat32 => (selector::USER_CODE32, selector::USER_DATA),
        Mode::Protected16 => (selector::USER_CODE16, selector::USER_DATA16),
    };
    let data = segment(data);
    let (idt_entry, cr4, efer) = if mode.ia32e() {
        (16, CR4_PAE, EFER_IA32E)
    } else {
        (8, 0, 0)
    };
    // Legacy protected mode runs with paging off: PVM cannot run CPL 3 code under 32-bit
    // paging (the vCPU shuts down at its first instruction).
    let cr0 = if mode.ia32e() { CR0 } else { CR0 & !CR0_PG };
    SystemRegisters {
        cs: segment(cs),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: segment(selector::TSS),
        ldtr: Segment {
            type_: 0x2,
            present: true,
            unusable: true,
            ..Segment::default()
        },
        gdt: DescriptorTable {
            base: GDT,
            limit: selector::GDT_BYTES - 1,
        },
        idt: DescriptorTable {
            base: IDT,
            limit: idt_entry * u16::from(VECTORS) - 1,
        },
        cr0,
        cr2: 0,
        cr3: if mode.ia32e() { PAGE_TABLE_ROOT } else { 0 },
        cr4,
        efer,
        ..*base
    }
}

/// RFLAGS bit 1 and IF: what every sequence starts with, besides its random flags.
pub const RFLAGS_BASE: u64 = 0x202;

/// The registers a sequence starts with: `gpr` as given, RIP at the entry, `rflags` with
/// [`RFLAGS_BASE`] added.
pub fn registers(mode: Mode, gpr: [u64; 16], rflags: u64) -> Registers {
    Registers {
        gpr,
        rip: mode.entry(),
        rflags: rflags | RFLAGS_BASE,
    }
}
