//! Kernels booted without firmware, as QEMU's `-kernel` boots them: a Linux bzImage
//! ([`linux`]) or a multiboot kernel ([`multiboot`]), loaded into guest RAM with the tables
//! they read (the memory map of [`e820`], a zero page or multiboot information, the MP table
//! of [`mptable`] that firmware would leave) and entered in the state their protocol gives
//! ([`entry`]).
//!
//! Guest memory a loader uses below 1 MiB (RAM there: a machine that boots a kernel has no
//! ROM):
//!
//! ```text
//!   0x500      GDT (entry)
//!   0x7000     Linux zero page
//!   0x9000     page tables of the 64-bit Linux entry, or the multiboot memory map
//!   0x9500     multiboot information
//!   0x20000    Linux command line
//!   0x9fc00    MP table (in the extended BIOS data area)
//! ```
//!
//! Errors carry their cause as their source: `{:#}` prints the whole line.

pub mod e820;
pub mod entry;
pub mod linux;
pub mod mptable;
pub mod multiboot;
pub mod vmlinux;

use std::path::{Path, PathBuf};

use umbra_cpu::interp::cpuid;
use umbra_mmu::memslot::{MemslotError, Memslots};

use crate::memory_size::MemorySize;
use entry::EntryState;
use linux::{LinuxBoot, LinuxEntry};

/// What to boot: `--kernel`, `--initrd`, `--append` and the Linux entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelBoot {
    /// The kernel image.
    pub kernel: PathBuf,
    /// Linux: the initrd file. Multiboot: the modules, separated by commas, each a file name
    /// and optional arguments after a space.
    pub initrd: Option<String>,
    /// The kernel command line.
    pub cmdline: String,
    /// Which of a Linux kernel's entry points to use.
    pub linux_entry: LinuxEntry,
}

/// Why a kernel cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// A file could not be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// The file's role: "kernel", "initrd", "module".
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The kernel is neither a bzImage nor a multiboot kernel.
    #[error("{0} is neither a Linux bzImage nor a multiboot kernel")]
    UnknownFormat(String),
    /// The bzImage cannot be booted.
    #[error("{path}")]
    Linux {
        /// The kernel file.
        path: String,
        /// Why.
        #[source]
        error: linux::LinuxError,
    },
    /// The multiboot kernel cannot be booted.
    #[error("{path}")]
    Multiboot {
        /// The kernel file.
        path: String,
        /// Why.
        #[source]
        error: multiboot::MultibootError,
    },
    /// The MP table could not be written (a bug in the layout).
    #[error("cannot write the MP table")]
    MpTable(#[source] MemslotError),
}

/// Reads `path` whole.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, LoaderError> {
    std::fs::read(path).map_err(|error| LoaderError::Read {
        what,
        path: path.display().to_string(),
        error,
    })
}

/// A kernel loaded.
#[derive(Debug)]
pub struct Loaded {
    /// The state to enter it in.
    pub entry: EntryState,
    /// Whether it is a Linux kernel (rather than a multiboot one).
    pub linux: bool,
}

/// Loads the kernel `boot` names, and what goes with it, into a machine with `memory` of RAM
/// and no firmware, with the MP table. A file with Linux's setup header is a bzImage (as QEMU
/// decides, even if it has a multiboot header too), whose command line gets
/// `linux_parameters` after the user's.
pub fn load(
    memslots: &Memslots,
    memory: MemorySize,
    boot: &KernelBoot,
    linux_parameters: &[&str],
) -> Result<Loaded, LoaderError> {
    let loaded = load_kernel(memslots, memory, boot, linux_parameters)?;
    let [signature, _, _, features] = cpuid::cpuid(1, 0);
    mptable::write(memslots, signature, features).map_err(LoaderError::MpTable)?;
    Ok(loaded)
}

/// [`load`] without the MP table.
fn load_kernel(
    memslots: &Memslots,
    memory: MemorySize,
    boot: &KernelBoot,
    linux_parameters: &[&str],
) -> Result<Loaded, LoaderError> {
    let image = read("kernel", &boot.kernel)?;
    let path = boot.kernel.display().to_string();
    if linux::is_bzimage(&image) {
        let initrd = match &boot.initrd {
            Some(file) => Some(read("initrd", Path::new(file))?),
            None => None,
        };
        let cmdline = std::iter::once(boot.cmdline.as_str())
            .chain(linux_parameters.iter().copied())
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let linux = LinuxBoot {
            initrd: initrd.as_deref(),
            cmdline: &cmdline,
            entry: boot.linux_entry,
        };
        let entry = linux::load(memslots, memory, &image, &linux)
            .map_err(|error| LoaderError::Linux { path, error })?;
        return Ok(Loaded { entry, linux: true });
    }
    let Some(header) = multiboot::find_header(&image) else {
        return Err(LoaderError::UnknownFormat(path));
    };
    let modules = match &boot.initrd {
        Some(list) => list
            .split(',')
            .map(|spec| {
                let file = spec.split(' ').next().unwrap_or_default();
                Ok(multiboot::Module {
                    data: read("module", Path::new(file))?,
                    cmdline: spec.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, LoaderError>>()?,
        None => Vec::new(),
    };
    let cmdline = format!("{path} {}", boot.cmdline);
    let entry = multiboot::load(memslots, memory, &image, &header, &cmdline, &modules)
        .map_err(|error| LoaderError::Multiboot { path, error })?;
    Ok(Loaded {
        entry,
        linux: false,
    })
}
