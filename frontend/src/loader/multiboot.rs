//! Multiboot (version 1) kernels, loaded as QEMU's `-kernel` loads them: an ELF32 image, or
//! any image whose header gives its load addresses (the "a.out kludge"), entered in flat
//! 32-bit protected mode with EAX = 0x2BADB002 and EBX pointing at the multiboot
//! information.
//!
//! The layout is QEMU's: the memory map at 0x9000, the information structure at 0x9500;
//! from the first page boundary after the kernel, the module list, the module and kernel
//! command lines and the boot loader's name; then each module, page-aligned. As with QEMU,
//! `--initrd` lists the modules, separated by commas, each a file name optionally followed
//! by a space and arguments (the whole string is the module's command line), and the
//! kernel's command line is its file name, a space, and `--append`.

use object::elf::{EM_386, PT_LOAD};
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader};
use object::{Endianness, Object};
use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::{MemslotError, Memslots};

use super::e820::{self, E820Entry};
use super::entry::{EntryMode, EntryState, gpr};
use crate::memory_map::ONE_MIB;
use crate::memory_size::MemorySize;

/// The header's magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What EAX holds at the kernel's entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// Where the memory map goes.
pub const MMAP_ADDR: u64 = 0x9000;
/// Where the multiboot information structure goes.
pub const INFO_ADDR: u64 = 0x9500;
/// The boot loader's name in the information structure.
pub const BOOTLOADER_NAME: &str = "umbra";

/// How far into the image the header may begin (it is 48 bytes long and within the first
/// 8192).
const HEADER_SEARCH: usize = 8192 - 48;
/// Header flag: the load addresses in the header are valid (the "a.out kludge").
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Information flags QEMU sets: memory sizes, boot device, command line, modules, memory
/// map, boot loader name.
const INFO_FLAGS: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9);
/// The boot device QEMU reports: the first hard disk, no partition.
const BOOT_DEVICE: u32 = 0x8000_ffff;
/// The size of the information structure (without the framebuffer fields).
const INFO_SIZE: usize = 88;
/// The size of one module-list entry.
const MODULE_ENTRY_SIZE: u64 = 16;
/// The size of one memory-map entry, and the value of its leading size field (which
/// excludes itself).
const MMAP_ENTRY_SIZE: usize = 24;
/// KiB of conventional memory reported.
const MEM_LOWER_KIB: u32 = 640;
/// The page size modules are aligned to.
const PAGE_SIZE: u64 = 0x1000;

/// Why a multiboot kernel cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum MultibootError {
    /// The header's load addresses do not describe the file.
    #[error("bad multiboot header: {0}")]
    BadHeader(&'static str),
    /// The ELF image cannot be read.
    /// A 64-bit or non-x86 ELF image, which QEMU refuses too.
    #[error("a multiboot ELF image must be 32-bit x86 (ELFCLASS32, EM_386)")]
    NotElf32,
    /// The kernel or a module lies outside low RAM.
    #[error("{what} at {start:#x}..{end:#x} is not in RAM (RAM ends at {ram_end:#x})")]
    OutOfRam {
        /// What does not fit.
        what: String,
        /// Where it begins.
        start: u64,
        /// Where it ends.
        end: u64,
        /// Where low RAM ends.
        ram_end: u64,
    },
    /// Guest memory refused a write.
    #[error("cannot write guest memory")]
    Memory(#[from] MemslotError),
}

/// A multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its offset in the image.
    pub offset: usize,
    /// Its flags.
    pub flags: u32,
    /// The a.out kludge fields: header_addr, load_addr, load_end_addr, bss_end_addr,
    /// entry_addr.
    pub addresses: [u32; 5],
}

/// The multiboot header of `image`, if it has one: the first 4-byte-aligned magic in the
/// first 8 KiB whose checksum holds.
pub fn find_header(image: &[u8]) -> Option<Header> {
    let word = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    (0..HEADER_SEARCH.min(image.len()))
        .step_by(4)
        .find_map(|offset| {
            let (magic, flags, checksum) = (word(offset)?, word(offset + 4)?, word(offset + 8)?);
            if magic != HEADER_MAGIC || magic.wrapping_add(flags).wrapping_add(checksum) != 0 {
                return None;
            }
            let mut addresses = [0; 5];
            for (n, address) in addresses.iter_mut().enumerate() {
                *address = word(offset + 12 + 4 * n).unwrap_or(0);
            }
            Some(Header {
                offset,
                flags,
                addresses,
            })
        })
}

/// A module: its contents and its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// The command line: the file name and any arguments, as given.
    pub cmdline: String,
}

/// The kernel's memory image: where it goes, its bytes (BSS included, zeroed), its entry.
struct KernelImage {
    load_addr: u64,
    bytes: Vec<u8>,
    entry: u64,
}

/// Loads the multiboot kernel `image` (with `header`) into a machine with `memory` of RAM and
/// no firmware, with `modules`, the command line `cmdline` and the multiboot information;
/// returns the entry state.
pub fn load(
    memslots: &Memslots,
    memory: MemorySize,
    image: &[u8],
    header: &Header,
    cmdline: &str,
    modules: &[Module],
) -> Result<EntryState, MultibootError> {
    let kernel = if header.flags & FLAG_AOUT_KLUDGE != 0 {
        aout_kludge_image(image, header)?
    } else {
        elf_image(image)?
    };
    let ram_end = e820::low_ram_end(memory);
    let kernel_end = kernel.load_addr + kernel.bytes.len() as u64;
    check_in_ram("the kernel", kernel.load_addr, kernel_end, ram_end)?;
    memslots.write(Gpa(kernel.load_addr), &kernel.bytes)?;

    // The module list, the command lines and the boot loader's name, after the kernel.
    let list_addr = kernel_end.next_multiple_of(PAGE_SIZE);
    let mut strings = Vec::new();
    let strings_addr = list_addr + MODULE_ENTRY_SIZE * modules.len() as u64;
    let mut add_string = |text: &str| {
        let addr = strings_addr + strings.len() as u64;
        strings.extend_from_slice(text.as_bytes());
        strings.push(0);
        addr as u32
    };
    let module_cmdlines: Vec<u32> = modules.iter().map(|m| add_string(&m.cmdline)).collect();
    let cmdline_addr = add_string(cmdline);
    let name_addr = add_string(BOOTLOADER_NAME);
    let mut next_module = (strings_addr + strings.len() as u64).next_multiple_of(PAGE_SIZE);
    let mut list = Vec::new();
    for (module, cmdline) in modules.iter().zip(module_cmdlines) {
        let end = next_module + module.data.len() as u64;
        check_in_ram(
            &format!("module '{}'", module.cmdline),
            next_module,
            end,
            ram_end,
        )?;
        memslots.write(Gpa(next_module), &module.data)?;
        for field in [next_module as u32, end as u32, cmdline, 0] {
            list.extend_from_slice(&field.to_le_bytes());
        }
        next_module = end.next_multiple_of(PAGE_SIZE);
    }
    check_in_ram("the multiboot information", list_addr, next_module, ram_end)?;
    memslots.write(Gpa(list_addr), &list)?;
    memslots.write(Gpa(strings_addr), &strings)?;

    let memory_map = e820::memory_map(memory);
    memslots.write(Gpa(MMAP_ADDR), &mmap_bytes(&memory_map))?;
    let info = Info {
        mem_upper_kib: ((ram_end - ONE_MIB) / 1024) as u32,
        cmdline: cmdline_addr,
        mods_count: modules.len() as u32,
        mods_addr: list_addr as u32,
        mmap_length: (memory_map.len() * MMAP_ENTRY_SIZE) as u32,
        boot_loader_name: name_addr,
    };
    memslots.write(Gpa(INFO_ADDR), &info.bytes())?;

    let state = EntryState::new(
        EntryMode::Protected32,
        kernel.entry,
        &[(gpr::RAX, BOOTLOADER_MAGIC.into()), (gpr::RBX, INFO_ADDR)],
    );
    state.write_tables(memslots)?;
    Ok(state)
}

/// The kernel image the header's load addresses describe, as QEMU reads it: from the
/// header's file offset less (header_addr - load_addr), load_end_addr - load_addr bytes
/// (to the end of the file if 0), then zeros up to bss_end_addr.
fn aout_kludge_image(image: &[u8], header: &Header) -> Result<KernelImage, MultibootError> {
    let [
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
        entry_addr,
    ] = header.addresses;
    let text_offset = header_addr
        .checked_sub(load_addr)
        .and_then(|before| (header.offset as u64).checked_sub(before.into()))
        .ok_or(MultibootError::BadHeader(
            "header_addr is below load_addr or too far from the header",
        ))? as usize;
    let load_size = match load_end_addr {
        0 => image
            .len()
            .checked_sub(text_offset)
            .ok_or(MultibootError::BadHeader(
                "the header's file offset is past the end of the file",
            ))?,
        end => end.checked_sub(load_addr).ok_or(MultibootError::BadHeader(
            "load_end_addr is below load_addr",
        ))? as usize,
    };
    let bytes =
        image
            .get(text_offset..text_offset + load_size)
            .ok_or(MultibootError::BadHeader(
                "the load addresses go past the end of the file",
            ))?;
    let memory_size = match bss_end_addr {
        0 => load_size,
        end => (end.checked_sub(load_addr))
            .ok_or(MultibootError::BadHeader("bss_end_addr is below load_addr"))?
            as usize,
    }
    .max(load_size);
    let mut bytes = bytes.to_vec();
    bytes.resize(memory_size, 0);
    Ok(KernelImage {
        load_addr: load_addr.into(),
        bytes,
        entry: entry_addr.into(),
    })
}

/// The kernel image of an ELF32 file: its loadable segments at their physical addresses,
/// from the lowest to the highest, with the gaps and BSS zeroed.
fn elf_image(image: &[u8]) -> Result<KernelImage, MultibootError> {
    let elf = ElfFile32::<Endianness>::parse(image).map_err(|_| MultibootError::NotElf32)?;
    let endian = elf.endian();
    if elf.elf_header().e_machine(endian) != EM_386 {
        return Err(MultibootError::NotElf32);
    }
    let segments: Vec<_> = elf
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD && ph.p_memsz(endian) > 0)
        .collect();
    let start = segments
        .iter()
        .map(|ph| u64::from(ph.p_paddr(endian)))
        .min()
        .ok_or(MultibootError::BadHeader(
            "the ELF image has no loadable segment",
        ))?;
    let end = segments
        .iter()
        .map(|ph| u64::from(ph.p_paddr(endian)) + u64::from(ph.p_memsz(endian)))
        .max()
        .unwrap_or(start);
    let mut bytes = vec![0; (end - start) as usize];
    for ph in segments {
        let data = ph.data(endian, image).map_err(|_| {
            MultibootError::BadHeader("an ELF segment goes past the end of the file")
        })?;
        let at = (u64::from(ph.p_paddr(endian)) - start) as usize;
        let len = data.len().min(ph.p_memsz(endian) as usize);
        bytes[at..at + len].copy_from_slice(&data[..len]);
    }
    Ok(KernelImage {
        load_addr: start,
        bytes,
        entry: elf.entry(),
    })
}

/// Checks that `start..end` is RAM above 1 MiB and below the end of low RAM.
fn check_in_ram(what: &str, start: u64, end: u64, ram_end: u64) -> Result<(), MultibootError> {
    if start < ONE_MIB || end > ram_end {
        return Err(MultibootError::OutOfRam {
            what: what.to_owned(),
            start,
            end,
            ram_end,
        });
    }
    Ok(())
}

/// The memory map as multiboot lays it out: for each entry, its size less the size field
/// (20), the base, the length and the type.
fn mmap_bytes(memory_map: &[E820Entry]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(memory_map.len() * MMAP_ENTRY_SIZE);
    for entry in memory_map {
        bytes.extend_from_slice(&(MMAP_ENTRY_SIZE as u32 - 4).to_le_bytes());
        bytes.extend_from_slice(&entry.addr.to_le_bytes());
        bytes.extend_from_slice(&entry.size.to_le_bytes());
        bytes.extend_from_slice(&(entry.kind as u32).to_le_bytes());
    }
    bytes
}

/// The fields of the multiboot information that vary.
struct Info {
    mem_upper_kib: u32,
    cmdline: u32,
    mods_count: u32,
    mods_addr: u32,
    mmap_length: u32,
    boot_loader_name: u32,
}

impl Info {
    /// The structure's bytes.
    fn bytes(&self) -> [u8; INFO_SIZE] {
        let mut bytes = [0; INFO_SIZE];
        let fields = [
            (0, INFO_FLAGS),
            (4, MEM_LOWER_KIB),
            (8, self.mem_upper_kib),
            (12, BOOT_DEVICE),
            (16, self.cmdline),
            (20, self.mods_count),
            (24, self.mods_addr),
            (44, self.mmap_length),
            (48, MMAP_ADDR as u32),
            (64, self.boot_loader_name),
        ];
        for (offset, value) in fields {
            bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel with an a.out-kludge header at offset 8: 0x30 bytes loaded at 2 MiB,
    /// BSS to 2 MiB + 0x1000, entry at 2 MiB + 0x20.
    fn kludge_kernel() -> Vec<u8> {
        let load = 0x20_0000u32;
        let flags = FLAG_AOUT_KLUDGE;
        let words = [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
            load + 8,
            load,
            load + 0x30,
            load + 0x1000,
            load + 0x20,
        ];
        let mut image = vec![0xf4u8; 8];
        image.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        image.resize(0x40, 0x90);
        image
    }

    fn machine(memory: &str) -> (Memslots, MemorySize) {
        let memslots = Memslots::new();
        let memory = memory.parse().unwrap();
        crate::memory_map::build(&memslots, memory, &[]).unwrap();
        (memslots, memory)
    }

    fn u32_at(memslots: &Memslots, addr: u64) -> u32 {
        let mut bytes = [0; 4];
        memslots.read(Gpa(addr), &mut bytes).unwrap();
        u32::from_le_bytes(bytes)
    }

    fn string_at(memslots: &Memslots, addr: u32) -> String {
        let mut bytes = vec![0; 64];
        memslots.read(Gpa(addr.into()), &mut bytes).unwrap();
        let end = bytes.iter().position(|&b| b == 0).unwrap();
        String::from_utf8(bytes[..end].to_vec()).unwrap()
    }

    #[test]
    fn the_header_is_found_only_with_its_checksum() {
        let image = kludge_kernel();
        let header = find_header(&image).unwrap();
        assert_eq!(header.offset, 8);
        assert_eq!(header.addresses[1], 0x20_0000);
        let mut bad = image.clone();
        bad[16] ^= 1;
        assert_eq!(find_header(&bad), None);
        assert_eq!(find_header(&[0; 100]), None);
    }

    #[test]
    fn the_information_structure_is_qemus() {
        let (memslots, memory) = machine("128M");
        let image = kludge_kernel();
        let header = find_header(&image).unwrap();
        let modules = [
            Module {
                data: vec![1; 10],
                cmdline: "one.bin".to_owned(),
            },
            Module {
                data: vec![2; 5000],
                cmdline: "two.bin arg=2".to_owned(),
            },
        ];
        let state = load(
            &memslots,
            memory,
            &image,
            &header,
            "kernel.elf quiet",
            &modules,
        )
        .unwrap();
        assert_eq!(state.mode, EntryMode::Protected32);
        assert_eq!(state.regs.rip, 0x20_0020);
        assert_eq!(state.regs.gpr[gpr::RAX], 0x2bad_b002);
        assert_eq!(state.regs.gpr[gpr::RBX], INFO_ADDR);

        // The kernel's bytes from the header's file offset less 8, then zeroed BSS.
        assert_eq!(u32_at(&memslots, 0x20_0000), 0xf4f4_f4f4);
        assert_eq!(u32_at(&memslots, 0x20_0008), HEADER_MAGIC);
        assert_eq!(u32_at(&memslots, 0x20_0030), 0);

        let info = |offset| u32_at(&memslots, INFO_ADDR + offset);
        assert_eq!(info(0), INFO_FLAGS);
        assert_eq!((info(4), info(8)), (640, (127 << 20) / 1024));
        assert_eq!(info(12), 0x8000_ffff);
        assert_eq!(string_at(&memslots, info(16)), "kernel.elf quiet");
        assert_eq!(string_at(&memslots, info(64)), "umbra");
        assert_eq!(info(20), 2);
        let list = u64::from(info(24));
        assert_eq!(list, 0x20_1000);
        let module = |n: u64, field: u64| u32_at(&memslots, list + 16 * n + 4 * field);
        assert_eq!(module(0, 0), 0x20_2000);
        assert_eq!(module(0, 1), 0x20_200a);
        assert_eq!(string_at(&memslots, module(0, 2)), "one.bin");
        assert_eq!((module(1, 0), module(1, 1)), (0x20_3000, 0x20_4388));
        assert_eq!(string_at(&memslots, module(1, 2)), "two.bin arg=2");

        assert_eq!((info(44), info(48)), (4 * 24, 0x9000));
        let entry = |n: u64, offset: u64| u32_at(&memslots, MMAP_ADDR + 24 * n + offset);
        assert_eq!((entry(0, 0), entry(0, 4), entry(0, 12)), (20, 0, 0x9_fc00));
        assert_eq!(
            (entry(3, 4), entry(3, 12), entry(3, 20)),
            (0x10_0000, 127 << 20, 1)
        );
        assert_eq!(entry(1, 20), 2);
    }

    #[test]
    fn bad_images_are_refused() {
        let (memslots, memory) = machine("128M");
        let image = kludge_kernel();
        let header = find_header(&image).unwrap();
        let error = load(&memslots, memory, &image[..0x20], &header, "", &[]).unwrap_err();
        assert!(matches!(error, MultibootError::BadHeader(_)), "{error}");

        let (small, small_memory) = machine("2M");
        let error = load(&small, small_memory, &image, &header, "", &[]).unwrap_err();
        assert!(matches!(error, MultibootError::OutOfRam { .. }), "{error}");

        let mut not_elf = image.clone();
        not_elf[12..16].copy_from_slice(&0u32.to_le_bytes());
        let words = [HEADER_MAGIC, 0, 0u32.wrapping_sub(HEADER_MAGIC)];
        not_elf[8..20].copy_from_slice(
            &words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect::<Vec<_>>(),
        );
        let header = find_header(&not_elf).unwrap();
        let error = load(&memslots, memory, &not_elf, &header, "", &[]).unwrap_err();
        assert!(matches!(error, MultibootError::NotElf32), "{error}");
    }
}
