//! The command line: `umbra run` and `umbra firmware list|dump`, in QEMU's habits where users have
//! them (`-m 512M`) with clear long options beside them.
//!
//! QEMU spells `-kernel`, `-initrd` and `-append` with one dash, which clap takes for bundled
//! short flags; [`qemu_spellings`] rewrites exactly those three words to `--kernel`,
//! `--initrd` and `--append` before clap sees the arguments (except as the value of an
//! `--append`, which stays as given).

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::gdb::GdbAddress;
use crate::loader::KernelBoot;
use crate::loader::linux::LinuxEntry;
use crate::memory_size::MemorySize;

/// Umbra: an x86-64 system emulator with a JIT, a software MMU and a KVM backend.
#[derive(Debug, Parser)]
#[command(name = "umbra", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest (by default the built-in `demo` firmware).
    Run(RunArgs),
    /// The guest programs built into Umbra.
    #[command(subcommand)]
    Firmware(FirmwareCommand),
}

/// `umbra firmware ...`.
#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// List the built-in firmware images.
    List,
    /// Write a built-in image's ROM to a file, e.g. for `qemu-system-x86_64 -bios FILE`.
    Dump {
        /// The image's name (see `umbra firmware list`).
        name: String,
        /// The file to write, created or truncated.
        file: PathBuf,
    },
}

/// `umbra run`'s options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A built-in firmware image by name (see `umbra firmware list`) or a ROM image file
    /// (a multiple of 64 KiB, at most 16 MiB, mapped below 4 GiB as a PC BIOS).
    #[arg(
        long,
        value_name = "NAME|FILE",
        default_value = "demo",
        conflicts_with = "kernel"
    )]
    pub firmware: String,

    /// Boot a kernel without firmware, as QEMU's -kernel: a Linux bzImage or a multiboot
    /// kernel (ELF32, or with the header's load addresses).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,

    /// With --kernel: Linux's initial RAM disk, or a multiboot kernel's modules as QEMU
    /// takes them (`FILE[ ARGS][,FILE[ ARGS]...]`).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<String>,

    /// With --kernel: the kernel command line.
    #[arg(
        long,
        value_name = "CMDLINE",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    pub append: Option<String>,

    /// With a Linux --kernel: `vmlinux` unpacks the kernel (xz, gzip or zstd) and enters
    /// the kernel proper at its 64-bit entry, skipping the kernel's own decompressor; `64` and
    /// `32` enter the bzImage's decompressor at its 64-bit entry (long mode, the first 4 GiB
    /// identity-mapped) or its 32-bit one (flat protected mode, paging off).
    #[arg(long, value_enum, default_value = "vmlinux", requires = "kernel")]
    pub boot_protocol: LinuxEntry,

    /// What runs guest code: `kvm`, the emulator (`emu`), or `auto` to pick for this host.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,

    /// How the emulator translates guest addresses: through its TLB and shadow pages
    /// (`shadow`), or by walking the guest's page tables on every access (`walker`, the
    /// reference the caches are checked against).
    #[arg(long, value_enum, default_value_t = MmuMode::Shadow)]
    pub mmu: MmuMode,

    /// Whether the emulator translates hot guest code to host code (`on`), or runs the
    /// interpreter alone (`off`).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub jit: Switch,

    /// How many times the emulator runs a block in the interpreter before translating it
    /// (0: translate everything at once).
    #[arg(long, value_name = "N", default_value_t = umbra_jit::DEFAULT_THRESHOLD)]
    pub jit_threshold: u32,

    /// Guest RAM, as QEMU's -m: 512M, 1G, or a bare number of MiB.
    #[arg(
        short = 'm',
        long = "memory",
        value_name = "SIZE",
        default_value = "128M"
    )]
    pub memory: MemorySize,

    /// Where the first serial port's output goes: `stdio` or `file:PATH`.
    #[arg(long, value_name = "stdio|file:PATH", default_value = "stdio")]
    pub serial: SerialTarget,

    /// How a guest's isa-debug-exit status `v` becomes Umbra's exit status: `umbra` exits with
    /// `v`, `qemu` with QEMU's `(v << 1) | 1`.
    #[arg(long, value_enum, default_value_t = ExitCodeStyle::Umbra)]
    pub exit_code: ExitCodeStyle,

    /// After the run, print the backend's MMU counters on stderr, one `name value` per line
    /// (the emulator's; KVM's MMU is the kernel's and keeps none Umbra can read).
    #[arg(long)]
    pub stats: bool,

    /// Show a live terminal UI beside the guest: its serial console, the vCPU, the MMU's
    /// roles, roots, shadow pages and TLB, rates over time, the memslots; pause, step, walk an
    /// address, browse the page tables (`?` lists the keys, `q` quits). With -S the guest
    /// waits, paused, for `p`.
    #[arg(long, conflicts_with_all = ["gdb", "gdb_default"])]
    pub tui: bool,

    /// Listen for gdb on tcp::1234 (loopback), as QEMU's -s.
    #[arg(short = 's', conflicts_with = "gdb")]
    pub gdb_default: bool,

    /// Do not start the guest until gdb (or the TUI's user) lets it run, as QEMU's -S.
    #[arg(short = 'S')]
    pub wait_for_gdb: bool,

    /// Listen for gdb on ADDRESS: tcp:HOST:PORT (tcp::PORT listens on loopback) or unix:PATH.
    #[arg(long, value_name = "tcp:HOST:PORT|unix:PATH")]
    pub gdb: Option<GdbAddress>,
}

impl RunArgs {
    /// The kernel to boot, if `--kernel` names one.
    pub fn kernel_boot(&self) -> Option<KernelBoot> {
        Some(KernelBoot {
            kernel: self.kernel.clone()?,
            initrd: self.initrd.clone(),
            cmdline: self.append.clone().unwrap_or_default(),
            linux_entry: self.boot_protocol,
        })
    }

    /// Where gdb is to connect, if anywhere.
    pub fn gdb_address(&self) -> Option<GdbAddress> {
        self.gdb
            .clone()
            .or(self.gdb_default.then(GdbAddress::default_tcp))
    }
}

/// QEMU's single-dash spellings of `--kernel`, `--initrd` and `--append`.
const QEMU_SPELLINGS: [(&str, &str); 3] = [
    ("-kernel", "--kernel"),
    ("-initrd", "--initrd"),
    ("-append", "--append"),
];

/// `args` with QEMU's `-kernel`, `-initrd` and `-append` spelled as clap parses them; a word
/// right after `--append` (or `-append`) is the command line and is left alone.
pub fn qemu_spellings(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut after_append = false;
    args.into_iter()
        .map(|arg| {
            let rewritten = QEMU_SPELLINGS
                .iter()
                .find(|(qemu, _)| !after_append && arg == *qemu)
                .map_or(arg, |(_, long)| OsString::from(long));
            after_append = rewritten == "--append";
            rewritten
        })
        .collect()
}

/// An on/off option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The `--mmu` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MmuMode {
    /// TLB and shadow pages in front of the page walker.
    Shadow,
    /// The page walker alone, on every access.
    Walker,
}

/// The `--accel` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM where it runs guests in hardware with two-dimensional paging, the emulator elsewhere.
    Auto,
    /// Always KVM.
    Kvm,
    /// Always Umbra's own emulator.
    Emu,
}

/// The `--exit-code` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExitCodeStyle {
    /// Exit with the status the guest wrote.
    Umbra,
    /// Exit with `(status << 1) | 1`, as QEMU's isa-debug-exit does.
    Qemu,
}

/// The `--serial` choices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialTarget {
    /// Umbra's standard output.
    Stdio,
    /// A file, created or truncated.
    File(PathBuf),
}

impl FromStr for SerialTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            None if text == "stdio" => Ok(SerialTarget::Stdio),
            Some(("file", path)) if !path.is_empty() => Ok(SerialTarget::File(path.into())),
            _ => Err("expected 'stdio' or 'file:PATH'".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_qemu_style_memory_and_serial_targets() {
        let cli =
            Cli::try_parse_from(["umbra", "run", "-m", "512M", "--serial", "file:/tmp/x"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not a run command")
        };
        assert_eq!(args.memory.bytes(), 512 << 20);
        assert_eq!(args.serial, SerialTarget::File("/tmp/x".into()));
        assert_eq!(args.firmware, "demo");
        assert_eq!(args.accel, Accel::Auto);
        assert!(!args.stats);
        assert_eq!(args.gdb_address(), None);
    }

    #[test]
    fn gdb_flags_are_qemus() {
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["umbra", "run"].iter().chain(extra)).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not a run command")
            };
            args
        };
        let args = parse(&["-s", "-S"]);
        assert_eq!(args.gdb_address(), Some(GdbAddress::default_tcp()));
        assert!(args.wait_for_gdb);
        let args = parse(&["--gdb", "unix:/tmp/umbra.gdb"]);
        assert_eq!(
            args.gdb_address(),
            Some(GdbAddress::Unix("/tmp/umbra.gdb".into()))
        );
        assert!(!args.wait_for_gdb);
        assert!(Cli::try_parse_from(["umbra", "run", "-s", "--gdb", "tcp::1"]).is_err());
        assert!(Cli::try_parse_from(["umbra", "run", "--gdb", "udp::1"]).is_err());
        assert!(Cli::try_parse_from(["umbra", "run", "--tui", "-s"]).is_err());
        assert!(parse(&["--tui"]).tui);
        assert!(parse(&["--tui", "-S"]).wait_for_gdb);
    }

    #[test]
    fn firmware_dump_takes_a_name_and_a_file() {
        let cli = Cli::try_parse_from(["umbra", "firmware", "dump", "demo", "demo.rom"]).unwrap();
        let Command::Firmware(FirmwareCommand::Dump { name, file }) = cli.command else {
            panic!("not a firmware dump command")
        };
        assert_eq!(name, "demo");
        assert_eq!(file, PathBuf::from("demo.rom"));
        assert!(Cli::try_parse_from(["umbra", "firmware", "dump", "demo"]).is_err());
    }

    #[test]
    fn qemus_kernel_flags_are_taken_with_one_dash() {
        let words = [
            "umbra",
            "run",
            "-kernel",
            "bz",
            "-initrd",
            "rd",
            "-append",
            "-initrd x",
            "-m",
            "1G",
        ];
        let args = qemu_spellings(words.map(OsString::from));
        assert_eq!(
            args,
            [
                "umbra",
                "run",
                "--kernel",
                "bz",
                "--initrd",
                "rd",
                "--append",
                "-initrd x",
                "-m",
                "1G"
            ]
        );
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not a run command")
        };
        let boot = run.kernel_boot().unwrap();
        assert_eq!(boot.kernel, PathBuf::from("bz"));
        assert_eq!(boot.initrd.as_deref(), Some("rd"));
        assert_eq!(boot.cmdline, "-initrd x");
        assert_eq!(boot.linux_entry, LinuxEntry::Vmlinux);
    }

    #[test]
    fn kernel_options_go_with_a_kernel_and_without_firmware() {
        let parse = |extra: &[&str]| Cli::try_parse_from(["umbra", "run"].iter().chain(extra));
        assert!(parse(&["--initrd", "rd"]).is_err());
        assert!(parse(&["--append", "quiet"]).is_err());
        assert!(parse(&["--kernel", "bz", "--firmware", "demo"]).is_err());
        let cli = parse(&["--kernel", "bz", "--boot-protocol", "32"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not a run command")
        };
        assert_eq!(run.kernel_boot().unwrap().linux_entry, LinuxEntry::Bits32);
        assert!(parse(&["--kernel", "bz", "--boot-protocol", "16"]).is_err());
    }

    #[test]
    fn bad_serial_targets_are_refused() {
        for bad in ["file:", "tcp:1234", "stdout"] {
            assert!(bad.parse::<SerialTarget>().is_err(), "{bad}");
        }
    }
}
