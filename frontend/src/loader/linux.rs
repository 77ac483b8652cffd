//! Linux's x86 boot protocol for a bzImage (the kernel's `Documentation/arch/x86/boot.rst`),
//! without firmware, as QEMU's `-kernel` and Firecracker do it.
//!
//! rust-vmm's `linux-loader` reads and checks the setup header and places the protected-mode
//! kernel at 1 MiB; this module builds the zero page (the setup header, the command line, the
//! initrd's place, the e820 map of [`super::e820`]) and enters the kernel at one of three
//! entries ([`LinuxEntry`]):
//! - by default, the kernel proper's `startup_64`, the kernel unpacked by Umbra
//!   ([`super::vmlinux`]) and placed at the physical addresses of its ELF segments (16 MiB for
//!   a distribution kernel), in long mode with the first 4 GiB identity-mapped;
//! - the bzImage's 64-bit entry (its decompressor's `startup_64`, 0x200 past the load
//!   address), the same way;
//! - its 32-bit entry (`startup_32`) in flat protected mode without paging.
//!
//! RSI holds the zero page's address in all three.
//!
//! ```text
//!   0x7000     zero page (struct boot_params)
//!   0x8ff0     top of the initial stack
//!   0x20000    command line
//!   0x100000   the protected-mode kernel, then its decompression space (init_size)
//!   0x1000000  the unpacked kernel (its segments' physical addresses), instead
//!   below the end of low RAM (or the kernel's initrd_addr_max), page-aligned: the initrd
//! ```

use std::io::Cursor;

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::KernelLoader;
use linux_loader::loader::bzimage::BzImage;
use umbra_mmu::addr::Gpa;
use umbra_mmu::memslot::{MemslotError, Memslots};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::e820::{self, E820Entry};
use super::entry::{EntryMode, EntryState, gpr};
use super::vmlinux;
use crate::memory_map::ONE_MIB;
use crate::memory_size::MemorySize;

/// Where the zero page goes.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The initial stack pointer of the 64-bit entry.
pub const STACK_TOP: u64 = 0x8ff0;
/// Where the command line goes.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Where the protected-mode kernel goes.
pub const KERNEL_ADDR: u64 = ONE_MIB;
/// The 64-bit entry's offset from the load address.
const STARTUP_64_OFFSET: u64 = 0x200;

/// Where the setup header begins in the image and the zero page.
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// The setup header's magic, "HdrS", and its offset in the image.
const HDRS_MAGIC: u32 = 0x5372_6448;
const HDRS_OFFSET: usize = 0x202;
/// The boot protocol versions that brought the fields this loader relies on.
const PROTOCOL_INITRD_ADDR_MAX: u16 = 0x0203;
const PROTOCOL_CMDLINE_SIZE: u16 = 0x0206;
const PROTOCOL_INIT_SIZE: u16 = 0x020a;
/// The highest initrd address before boot protocol 2.03.
const OLD_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;
/// The longest command line before boot protocol 2.06, without its NUL.
const OLD_CMDLINE_SIZE: u32 = 255;
/// xloadflags: the kernel has the 64-bit entry at 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// type_of_loader for a loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// The size of a page, the initrd's alignment.
const PAGE_SIZE: u64 = 0x1000;

/// Which of the kernel's entry points to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LinuxEntry {
    /// The kernel proper's 64-bit entry: Umbra unpacks the kernel ([`vmlinux`]) and the
    /// guest starts past its decompressor, in long mode with the first 4 GiB identity-mapped.
    Vmlinux,
    /// The 64-bit entry: long mode, the first 4 GiB identity-mapped.
    #[value(name = "64")]
    Bits64,
    /// The 32-bit entry: flat protected mode, paging off.
    #[value(name = "32")]
    Bits32,
}

/// Why a bzImage cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// The file ends before the kernel its header describes.
    #[error("truncated bzImage: {len} bytes, its header describes {needed}")]
    Truncated {
        /// The file's size.
        len: usize,
        /// The size the setup header gives (setup sectors and syssize).
        needed: usize,
    },
    /// linux-loader refused the image.
    #[error("not a bzImage linux-loader can load")]
    Rejected(#[source] linux_loader::loader::Error),
    /// The kernel has no 64-bit entry point.
    #[error("this kernel has no 64-bit entry point (boot it with --boot-protocol 32)")]
    No64BitEntry,
    /// The kernel (with its decompression space) does not fit in low RAM above 1 MiB.
    #[error(
        "the kernel needs RAM from {start:#x} to {end:#x}, but the kernel's RAM is from 1 MiB to {ram_end:#x}"
    )]
    OutsideRam {
        /// Where the kernel starts.
        start: u64,
        /// The end of the kernel's load and decompression space.
        end: u64,
        /// Where RAM below 4 GiB ends.
        ram_end: u64,
    },
    /// The kernel proper cannot be taken out of the bzImage.
    #[error(transparent)]
    Vmlinux(#[from] vmlinux::VmlinuxError),
    /// The command line is longer than the kernel takes.
    #[error("the kernel command line is {len} bytes; this kernel takes at most {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The kernel's limit (cmdline_size).
        max: u32,
    },
    /// The command line is not one the kernel can take.
    #[error("kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The initrd does not fit between the kernel and the highest address it may be at.
    #[error(
        "the initrd ({size} bytes) does not fit in RAM between the kernel's end at {kernel_end:#x} and {limit:#x}"
    )]
    InitrdTooLarge {
        /// The initrd's size.
        size: usize,
        /// The end of the kernel's load and decompression space.
        kernel_end: u64,
        /// The highest address the initrd may end at.
        limit: u64,
    },
    /// The host would not map the memory the kernel is staged in.
    #[error("cannot map memory to stage the kernel in")]
    Staging(#[source] vm_memory::mmap::FromRangesError),
    /// Guest memory refused a write (a bug in the layout).
    #[error("cannot write guest memory")]
    Memory(#[from] MemslotError),
}

/// Whether `image` has a Linux setup header (the "HdrS" magic).
pub fn is_bzimage(image: &[u8]) -> bool {
    image
        .get(HDRS_OFFSET..HDRS_OFFSET + 4)
        .is_some_and(|magic| u32::from_le_bytes(magic.try_into().expect("4 bytes")) == HDRS_MAGIC)
}

/// What a Linux boot takes besides the kernel image.
#[derive(Clone, Copy, Debug)]
pub struct LinuxBoot<'a> {
    /// The initial RAM disk, if any.
    pub initrd: Option<&'a [u8]>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// The entry point to use.
    pub entry: LinuxEntry,
}

/// Loads the bzImage `image` into a machine with `memory` of RAM and no firmware, with the
/// zero page, command line, initrd and boot tables; returns the entry state.
pub fn load(
    memslots: &Memslots,
    memory: MemorySize,
    image: &[u8],
    boot: &LinuxBoot,
) -> Result<EntryState, LinuxError> {
    check_length(image)?;
    let (header, kernel) = load_kernel(image)?;
    let ram_end = e820::low_ram_end(memory);
    let (kernel_end, entry_point) = match boot.entry {
        LinuxEntry::Vmlinux => {
            let vmlinux = vmlinux::unpack(
                header.version,
                header.payload_offset,
                header.payload_length,
                &kernel,
            )?;
            check_fits(vmlinux.start(), vmlinux.end(), ram_end)?;
            for segment in &vmlinux.segments {
                memslots.write(Gpa(segment.addr), &segment.data)?;
                let zeros = vec![0; (segment.mem_size - segment.data.len() as u64) as usize];
                memslots.write(Gpa(segment.addr + segment.data.len() as u64), &zeros)?;
            }
            (vmlinux.end(), vmlinux.entry)
        }
        LinuxEntry::Bits64 | LinuxEntry::Bits32 => {
            let bits64 = boot.entry == LinuxEntry::Bits64;
            if bits64 && header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LinuxError::No64BitEntry);
            }
            let kernel_end = KERNEL_ADDR + kernel_footprint(&header, kernel.len());
            check_fits(KERNEL_ADDR, kernel_end, ram_end)?;
            memslots.write(Gpa(KERNEL_ADDR), &kernel)?;
            let offset = if bits64 { STARTUP_64_OFFSET } else { 0 };
            (kernel_end, KERNEL_ADDR + offset)
        }
    };

    let cmdline = command_line(&header, boot.cmdline)?;
    memslots.write(Gpa(CMDLINE_ADDR), &cmdline)?;
    let initrd = match boot.initrd {
        Some(initrd) => {
            let addr = initrd_address(&header, initrd.len(), kernel_end, ram_end)?;
            memslots.write(Gpa(addr), initrd)?;
            Some((addr, initrd.len()))
        }
        None => None,
    };
    let zero_page = zero_page(header, initrd, &e820::memory_map(memory));
    memslots.write(Gpa(ZERO_PAGE_ADDR), zero_page.as_slice())?;

    let state = match boot.entry {
        LinuxEntry::Vmlinux | LinuxEntry::Bits64 => EntryState::new(
            EntryMode::Long64,
            entry_point,
            &[(gpr::RSI, ZERO_PAGE_ADDR), (gpr::RSP, STACK_TOP)],
        ),
        LinuxEntry::Bits32 => EntryState::new(
            EntryMode::Protected32,
            entry_point,
            &[(gpr::RSI, ZERO_PAGE_ADDR)],
        ),
    };
    state.write_tables(memslots)?;
    Ok(state)
}

/// Checks that a kernel from `start` to `end` lies in RAM above the boot tables (1 MiB) and
/// below `ram_end`.
fn check_fits(start: u64, end: u64, ram_end: u64) -> Result<(), LinuxError> {
    if start < ONE_MIB || end > ram_end {
        return Err(LinuxError::OutsideRam {
            start,
            end,
            ram_end,
        });
    }
    Ok(())
}

/// Checks that `image` holds all its setup header says it has: the setup sectors and
/// `syssize` paragraphs of protected-mode kernel after them.
fn check_length(image: &[u8]) -> Result<(), LinuxError> {
    let header_end = SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>();
    let truncated = |needed| LinuxError::Truncated {
        len: image.len(),
        needed,
    };
    let mut header = setup_header::default();
    header.as_mut_slice().copy_from_slice(
        image
            .get(SETUP_HEADER_OFFSET..header_end)
            .ok_or(truncated(header_end))?,
    );
    let setup_sectors = match header.setup_sects {
        0 => 4,
        n => usize::from(n),
    };
    let needed = (setup_sectors + 1) * 512 + header.syssize as usize * 16;
    if image.len() < needed {
        return Err(truncated(needed));
    }
    Ok(())
}

/// Has linux-loader check the image and place its protected-mode kernel at [`KERNEL_ADDR`]
/// in a staging memory; returns the setup header and the kernel's bytes.
fn load_kernel(image: &[u8]) -> Result<(setup_header, Vec<u8>), LinuxError> {
    let staging_size = (image.len() as u64).next_multiple_of(PAGE_SIZE) as usize;
    let staging = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(KERNEL_ADDR), staging_size)])
        .map_err(LinuxError::Staging)?;
    let loaded = BzImage::load(
        &staging,
        Some(GuestAddress(KERNEL_ADDR)),
        &mut Cursor::new(image),
        Some(GuestAddress(KERNEL_ADDR)),
    )
    .map_err(LinuxError::Rejected)?;
    let header = loaded
        .setup_header
        .expect("the bzImage loader returns the setup header");
    let mut kernel = vec![0; (loaded.kernel_end - KERNEL_ADDR) as usize];
    staging
        .read_slice(&mut kernel, GuestAddress(KERNEL_ADDR))
        .expect("the staging memory holds the kernel it was loaded with");
    Ok((header, kernel))
}

/// How much RAM from the load address the kernel needs: its size or, from protocol 2.10,
/// the space it decompresses into (init_size), whichever is larger.
fn kernel_footprint(header: &setup_header, kernel_len: usize) -> u64 {
    let init_size = if header.version >= PROTOCOL_INIT_SIZE {
        u64::from(header.init_size)
    } else {
        0
    };
    init_size.max(kernel_len as u64)
}

/// The command line as the kernel reads it, NUL-terminated, checked against the kernel's
/// limit.
fn command_line(header: &setup_header, text: &str) -> Result<Vec<u8>, LinuxError> {
    let max = if header.version >= PROTOCOL_CMDLINE_SIZE {
        header.cmdline_size
    } else {
        OLD_CMDLINE_SIZE
    };
    if text.len() > max as usize {
        return Err(LinuxError::CmdlineTooLong {
            len: text.len(),
            max,
        });
    }
    let cmdline = Cmdline::try_from(text, max as usize + 1).map_err(LinuxError::Cmdline)?;
    let cstring = cmdline.as_cstring().map_err(LinuxError::Cmdline)?;
    Ok(cstring.into_bytes_with_nul())
}

/// Where an initrd of `size` bytes goes: as high as the kernel allows (its initrd_addr_max,
/// and the end of low RAM), page-aligned, as QEMU places it; above the kernel.
fn initrd_address(
    header: &setup_header,
    size: usize,
    kernel_end: u64,
    ram_end: u64,
) -> Result<u64, LinuxError> {
    let addr_max = if header.version >= PROTOCOL_INITRD_ADDR_MAX {
        header.initrd_addr_max
    } else {
        OLD_INITRD_ADDR_MAX
    };
    let limit = ram_end.min(u64::from(addr_max) + 1);
    limit
        .checked_sub(size as u64)
        .map(|addr| addr & !(PAGE_SIZE - 1))
        .filter(|&addr| addr >= kernel_end)
        .ok_or(LinuxError::InitrdTooLarge {
            size,
            kernel_end,
            limit,
        })
}

/// The zero page: the image's setup header with the loader's fields filled in, and the
/// memory map.
fn zero_page(
    mut header: setup_header,
    initrd: Option<(u64, usize)>,
    memory_map: &[E820Entry],
) -> boot_params {
    header.type_of_loader = LOADER_TYPE_UNDEFINED;
    header.cmd_line_ptr = CMDLINE_ADDR as u32;
    if let Some((addr, size)) = initrd {
        header.ramdisk_image = addr as u32;
        header.ramdisk_size = size as u32;
    }
    let mut params = boot_params {
        hdr: header,
        ..boot_params::default()
    };
    let mut table = params.e820_table;
    for (slot, entry) in table.iter_mut().zip(memory_map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_table = table;
    params.e820_entries = memory_map.len().min(table.len()) as u8;
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: one setup sector after the boot sector, the header of protocol
    /// 2.15 with a 64-bit entry, and `kernel_len` bytes of protected-mode kernel.
    pub(crate) fn tiny_bzimage(kernel_len: usize) -> Vec<u8> {
        let mut image = vec![0u8; 2 * 512 + kernel_len];
        let put = |image: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            image[at..at + bytes.len()].copy_from_slice(bytes)
        };
        image[0x1f1] = 1;
        put(&mut image, 0x1f4, &(kernel_len as u32 / 16).to_le_bytes());
        put(&mut image, 0x1fe, &0xaa55u16.to_le_bytes());
        put(&mut image, HDRS_OFFSET, &HDRS_MAGIC.to_le_bytes());
        put(&mut image, 0x206, &0x020fu16.to_le_bytes());
        image[0x211] = 1;
        put(&mut image, 0x214, &0x10_0000u32.to_le_bytes());
        put(&mut image, 0x22c, &0x7fff_ffffu32.to_le_bytes());
        put(&mut image, 0x236, &XLF_KERNEL_64.to_le_bytes());
        put(&mut image, 0x238, &2047u32.to_le_bytes());
        put(&mut image, 0x260, &0x40_0000u32.to_le_bytes());
        for (n, byte) in image[1024..].iter_mut().enumerate() {
            *byte = n as u8;
        }
        image
    }

    fn machine(memory: &str) -> (Memslots, MemorySize) {
        let memslots = Memslots::new();
        let memory = memory.parse().unwrap();
        crate::memory_map::build(&memslots, memory, &[]).unwrap();
        (memslots, memory)
    }

    fn read_params(memslots: &Memslots) -> boot_params {
        let mut params = boot_params::default();
        memslots
            .read(Gpa(ZERO_PAGE_ADDR), params.as_mut_slice())
            .unwrap();
        params
    }

    #[test]
    fn the_zero_page_has_the_header_command_line_initrd_and_memory_map() {
        let (memslots, memory) = machine("64M");
        let image = tiny_bzimage(0x2000);
        let initrd = vec![0x5a; 5000];
        let boot = LinuxBoot {
            initrd: Some(&initrd),
            cmdline: "console=ttyS0 pci=off",
            entry: LinuxEntry::Bits64,
        };
        let state = load(&memslots, memory, &image, &boot).unwrap();
        assert_eq!(state.mode, EntryMode::Long64);
        assert_eq!(state.regs.rip, 0x10_0200);
        assert_eq!(state.regs.gpr[gpr::RSI], ZERO_PAGE_ADDR);

        let params = read_params(&memslots);
        let hdr = params.hdr;
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.code32_start }, KERNEL_ADDR as u32);
        let (ramdisk, size) = ({ hdr.ramdisk_image }, { hdr.ramdisk_size });
        assert_eq!(size, 5000);
        assert_eq!(ramdisk, (64 << 20) - 0x2000);
        let mut back = vec![0; 5000];
        memslots.read(Gpa(ramdisk.into()), &mut back).unwrap();
        assert_eq!(back, initrd);

        let mut cmdline = [0u8; 22];
        memslots.read(Gpa(CMDLINE_ADDR), &mut cmdline).unwrap();
        assert_eq!(&cmdline, b"console=ttyS0 pci=off\0");

        assert_eq!(params.e820_entries, 4);
        let table = params.e820_table;
        let last = table[3];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (ONE_MIB, (64 << 20) - ONE_MIB, 1)
        );
        let mut kernel = [0u8; 4];
        memslots.read(Gpa(KERNEL_ADDR + 0x10), &mut kernel).unwrap();
        assert_eq!(kernel, [0x10, 0x11, 0x12, 0x13]);
    }

    #[test]
    fn the_32_bit_entry_is_the_load_address() {
        let (memslots, memory) = machine("64M");
        let boot = LinuxBoot {
            initrd: None,
            cmdline: "",
            entry: LinuxEntry::Bits32,
        };
        let state = load(&memslots, memory, &tiny_bzimage(0x1000), &boot).unwrap();
        assert_eq!(state.mode, EntryMode::Protected32);
        assert_eq!(state.regs.rip, KERNEL_ADDR);
        let hdr = read_params(&memslots).hdr;
        assert_eq!(({ hdr.ramdisk_image }, { hdr.ramdisk_size }), (0, 0));
    }

    #[test]
    fn the_vmlinux_entry_is_the_unpacked_kernel_s_own() {
        use crate::loader::vmlinux::tests::{gzip_payload, tiny_elf};
        let (memslots, memory) = machine("64M");
        let payload = gzip_payload(&tiny_elf(&[0x90, 0xf4], 0x100));
        let mut image = tiny_bzimage(payload.len().next_multiple_of(16));
        image[1024..1024 + payload.len()].copy_from_slice(&payload);
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let initrd = vec![0x5a; 5000];
        let boot = LinuxBoot {
            initrd: Some(&initrd),
            cmdline: "",
            entry: LinuxEntry::Vmlinux,
        };
        memslots.write(Gpa(0x100_0002), &[0xff; 4]).unwrap();
        let state = load(&memslots, memory, &image, &boot).unwrap();
        assert_eq!(state.mode, EntryMode::Long64);
        assert_eq!(state.regs.rip, 0x100_0000);
        assert_eq!(state.regs.gpr[gpr::RSI], ZERO_PAGE_ADDR);
        let mut kernel = [0xaa; 4];
        memslots.read(Gpa(0x100_0000), &mut kernel).unwrap();
        assert_eq!(kernel, [0x90, 0xf4, 0, 0], "the code, then its zeroed bss");
        let hdr = read_params(&memslots).hdr;
        assert!(u64::from(hdr.ramdisk_image) >= 0x100_0102);

        let mut lz4 = image.clone();
        lz4[1024..1028].copy_from_slice(&[0x02, 0x21, 0x4c, 0x18]);
        let error = load(&memslots, memory, &lz4, &boot).unwrap_err();
        assert!(error.to_string().contains("--boot-protocol 64"), "{error}");
    }

    #[test]
    fn bad_images_and_arguments_are_refused() {
        let (memslots, memory) = machine("64M");
        let boot = LinuxBoot {
            initrd: None,
            cmdline: "",
            entry: LinuxEntry::Bits64,
        };
        let image = tiny_bzimage(0x1000);
        let error = load(&memslots, memory, &image[..image.len() - 1], &boot).unwrap_err();
        assert!(matches!(error, LinuxError::Truncated { .. }), "{error}");
        let error = load(&memslots, memory, &image[..0x210], &boot).unwrap_err();
        assert!(matches!(error, LinuxError::Truncated { .. }), "{error}");

        let long = "x".repeat(2048);
        let too_long = LinuxBoot {
            cmdline: &long,
            ..boot
        };
        let error = load(&memslots, memory, &image, &too_long).unwrap_err();
        assert!(
            matches!(
                error,
                LinuxError::CmdlineTooLong {
                    len: 2048,
                    max: 2047
                }
            ),
            "{error}"
        );
        let nul = LinuxBoot {
            cmdline: "quiet\0",
            ..boot
        };
        let error = load(&memslots, memory, &image, &nul).unwrap_err();
        assert!(matches!(error, LinuxError::Cmdline(_)), "{error}");

        let mut no_64 = image.clone();
        no_64[0x236] = 0;
        let error = load(&memslots, memory, &no_64, &boot).unwrap_err();
        assert!(matches!(error, LinuxError::No64BitEntry), "{error}");

        let (small, small_memory) = machine("4M");
        let error = load(&small, small_memory, &image, &boot).unwrap_err();
        assert!(matches!(error, LinuxError::OutsideRam { .. }), "{error}");

        let (memslots, memory) = machine("8M");
        let huge = vec![0; 4 << 20];
        let with_huge = LinuxBoot {
            initrd: Some(&huge),
            ..boot
        };
        let error = load(&memslots, memory, &image, &with_huge).unwrap_err();
        assert!(
            matches!(error, LinuxError::InitrdTooLarge { .. }),
            "{error}"
        );
    }
}
