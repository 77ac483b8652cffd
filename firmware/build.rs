//! Builds the firmware images. Each image is the shared sources plus its own source in
//! `asm/`, assembled by GNU `as`, linked by GNU `ld` with `asm/rom.ld` into an ELF that
//! keeps its symbols and line info (for gdb), and cut by `objcopy` into the flat 64 KiB ROM.
//! Two Rust fragments in `OUT_DIR` describe the results to `src/lib.rs`: `builtin.rs` (the
//! table of images users pick by name) and `test_images.rs` (one function per test image).
//! Kernels booted without firmware are built beside them into ELF32 files, described by a
//! third fragment, `kernels.rs`.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::{env, fs};

/// The size of every ROM (`umbra_firmware::ROM_SIZE`).
const ROM_SIZE: usize = 0x10000;
/// Where the CPU starts in the ROM: address 0xffff_fff0.
const RESET_VECTOR_OFFSET: usize = 0xfff0;
/// The opcode of the near jump `asm/boot.s` puts at the reset vector.
const NEAR_JMP: u8 = 0xe9;

/// Sources linked into every image, in `asm/`.
const SHARED_SOURCES: &[&str] = &["boot.s", "console.s", "traps.s", "paging.s", "checks.s"];
/// The shared include and the linker script, in `asm/`.
const INCLUDE: &str = "umbra.inc";
const LINKER_SCRIPT: &str = "rom.ld";

/// Who gets to pick an image.
enum Listing {
    /// Listed by `builtin()`, found by `find()`.
    Builtin,
    /// Reached only through a function of the same name in `test_images`.
    TestOnly,
}

/// One image to build.
struct ImageSpec {
    /// The name users and tests pick it by.
    name: &'static str,
    /// Its own source in `asm/`, linked after the shared ones; it defines `image_main`.
    source: &'static str,
    /// `--defsym` definitions for `as`.
    defines: &'static [&'static str],
    /// Whether users can pick it.
    listing: Listing,
    /// One line for `umbra firmware list`.
    summary: &'static str,
}

/// Every image: adding one takes an asm source and one line here.
const IMAGES: &[ImageSpec] = &[
    ImageSpec {
        name: "demo",
        source: "demo.s",
        defines: &[],
        listing: Listing::Builtin,
        summary: "reset to long mode, then checks CR3 switches, CR0.WP and a 2 MiB page",
    },
    ImageSpec {
        name: "demo-fail",
        source: "demo.s",
        defines: &["FORCE_FAIL=1"],
        listing: Listing::TestOnly,
        summary: "demo with one check made to fail, so it exits with status 1",
    },
    ImageSpec {
        name: "bench-compute",
        source: "bench-compute.s",
        defines: &[],
        listing: Listing::Builtin,
        summary: "integer benchmark at CPL 3: sieve, CRC-32, memcpy, heapsort, timed with RDTSC",
    },
    ImageSpec {
        name: "bench-compute-quick",
        source: "bench-compute.s",
        defines: &["QUICK=1"],
        listing: Listing::TestOnly,
        summary: "bench-compute on data about 30 times smaller, for tests on unoptimized builds",
    },
    ImageSpec {
        name: "mmu-access",
        source: "mmu-access.s",
        defines: &[],
        listing: Listing::Builtin,
        summary: "MMU conformance: page-table flags, WP, SMEP, SMAP, NXE, PKU at CPL 0 and 3; a digest",
    },
    ImageSpec {
        name: "mmu-access-qemu",
        source: "mmu-access.s",
        defines: &["QEMU_TCG=1"],
        listing: Listing::TestOnly,
        summary: "mmu-access with QEMU TCG's known deviations masked, to compare QEMU with the others",
    },
    ImageSpec {
        name: "bench-ctxsw",
        source: "bench-ctxsw.s",
        defines: &[],
        listing: Listing::Builtin,
        summary: "CR3 switches among 8 address spaces: plain, with CR0.WP toggles, with PCIDs",
    },
    ImageSpec {
        name: "bench-ctxsw-warmup",
        source: "bench-ctxsw.s",
        defines: &["WARMUP_ONLY=1"],
        listing: Listing::Builtin,
        summary: "bench-ctxsw's warm-up switches alone, to subtract from its --stats counters",
    },
    ImageSpec {
        name: "bench-ctxsw-quick",
        source: "bench-ctxsw.s",
        defines: &["SWITCHES=1000"],
        listing: Listing::TestOnly,
        summary: "bench-ctxsw with 1000 timed switches per variant, for tests on KVM's emulator",
    },
    ImageSpec {
        name: "pt-modify",
        source: "pt-modify.s",
        defines: &[],
        listing: Listing::TestOnly,
        summary: "page-table changes with and without INVLPG in 32-bit, PAE, 4- and 5-level paging",
    },
    ImageSpec {
        name: "jit-test",
        source: "jit-test.s",
        defines: &[],
        listing: Listing::TestOnly,
        summary: "self-modifying code, aliases, CR3 remaps and a fault mid-block, run hot",
    },
    ImageSpec {
        name: "irq-test",
        source: "irq-test.s",
        defines: &[],
        listing: Listing::Builtin,
        summary: "PIC, PIT, RTC and UART interrupts as an OS programs them",
    },
    ImageSpec {
        name: "echo",
        source: "echo.s",
        defines: &[],
        listing: Listing::Builtin,
        summary: "the serial console's loop-back: sends back what is typed until Ctrl-D",
    },
];

/// A kernel that boots without firmware (`umbra run --kernel`, QEMU's `-kernel`): a
/// multiboot ELF32 image, assembled from its own source alone (32-bit code) and linked by
/// `asm/multiboot.ld`. Tests reach each through a function of the same name in `kernels`,
/// which gives the ELF's path.
struct KernelSpec {
    /// The name tests pick it by.
    name: &'static str,
    /// Its source in `asm/`.
    source: &'static str,
    /// One line on what it does.
    summary: &'static str,
}

/// The kernels' linker script, in `asm/`.
const KERNEL_LINKER_SCRIPT: &str = "multiboot.ld";

/// Every kernel.
const KERNELS: &[KernelSpec] = &[KernelSpec {
    name: "multiboot-test",
    source: "multiboot-test.s",
    summary: "multiboot kernel: checks its boot information and memory map against fw_cfg",
}];

/// Why the firmware could not be built.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("cargo did not set {0}")]
    MissingEnv(&'static str),
    #[error("`{tool}` not found: building the firmware needs GNU binutils (as, ld, objcopy)")]
    ToolMissing { tool: String },
    #[error("could not run `{tool}`: {source}")]
    ToolSpawn { tool: String, source: io::Error },
    #[error("`{command}` failed ({status})")]
    ToolFailed { command: String, status: ExitStatus },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not valid UTF-8, so include_bytes! cannot name it", path.display())]
    NonUtf8Path { path: PathBuf },
    #[error("{image}.rom is {size} bytes, not {ROM_SIZE}")]
    RomSize { image: &'static str, size: usize },
    #[error(
        "{image}.rom has {byte:#04x} at the reset vector (offset {RESET_VECTOR_OFFSET:#x}), not a near jmp ({NEAR_JMP:#04x})"
    )]
    ResetVector { image: &'static str, byte: u8 },
}

fn main() {
    if let Err(error) = build() {
        eprintln!("umbra-firmware: {error}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), BuildError> {
    let manifest_dir = env_path("CARGO_MANIFEST_DIR")?;
    let out_dir = env_path("OUT_DIR")?;
    let asm_dir = manifest_dir.join("asm");

    let mut inputs: Vec<&str> = vec![INCLUDE, LINKER_SCRIPT, KERNEL_LINKER_SCRIPT];
    inputs.extend(SHARED_SOURCES);
    inputs.extend(IMAGES.iter().map(|image| image.source));
    inputs.extend(KERNELS.iter().map(|kernel| kernel.source));
    inputs.sort_unstable();
    inputs.dedup();
    for input in inputs {
        println!("cargo:rerun-if-changed={}", asm_dir.join(input).display());
    }

    let shared_dir = out_dir.join("shared");
    create_dir(&shared_dir)?;
    let mut shared_objects = Vec::with_capacity(SHARED_SOURCES.len());
    for source in SHARED_SOURCES {
        let object = shared_dir.join(Path::new(source).with_extension("o"));
        assemble(&asm_dir, source, &[], "--64", &object)?;
        shared_objects.push(object);
    }

    let mut builtin = String::from("[\n");
    let mut test_images = String::new();
    for image in IMAGES {
        let elf = out_dir.join(format!("{}.elf", image.name));
        let rom = out_dir.join(format!("{}.rom", image.name));
        let object = out_dir.join(format!("{}.o", image.name));
        assemble(&asm_dir, image.source, image.defines, "--64", &object)?;
        link(&asm_dir.join(LINKER_SCRIPT), &shared_objects, &object, &elf)?;
        run(Command::new("objcopy")
            .args(["-O", "binary", "-j", ".rom"])
            .arg(&elf)
            .arg(&rom))?;
        verify_rom(image.name, &rom)?;

        let literal = image_literal(image, &rom, &elf)?;
        match image.listing {
            Listing::Builtin => builtin.push_str(&format!("    {literal},\n")),
            Listing::TestOnly => test_images.push_str(&format!(
                "/// {}\npub fn {}() -> &'static crate::Image {{\n    static IMAGE: crate::Image = {literal};\n    &IMAGE\n}}\n",
                image.summary,
                image.name.replace('-', "_"),
            )),
        }
    }
    builtin.push_str("]\n");
    write(&out_dir.join("builtin.rs"), &builtin)?;
    write(&out_dir.join("test_images.rs"), &test_images)?;
    build_kernels(&asm_dir, &out_dir)
}

/// Builds [`KERNELS`] and writes `kernels.rs`, one function per kernel giving its ELF's path.
fn build_kernels(asm_dir: &Path, out_dir: &Path) -> Result<(), BuildError> {
    let mut functions = String::new();
    for kernel in KERNELS {
        let object = out_dir.join(format!("{}.o", kernel.name));
        let elf = out_dir.join(format!("{}.elf", kernel.name));
        assemble(asm_dir, kernel.source, &[], "--32", &object)?;
        run(Command::new("ld")
            .args(["-m", "elf_i386", "--fatal-warnings", "-nostdlib", "-static"])
            .args(["-z", "max-page-size=0x1000", "-T"])
            .arg(asm_dir.join(KERNEL_LINKER_SCRIPT))
            .arg("-o")
            .arg(&elf)
            .arg(&object))?;
        functions.push_str(&format!(
            "/// {}\npub fn {}() -> &'static str {{\n    {:?}\n}}\n",
            kernel.summary,
            kernel.name.replace('-', "_"),
            utf8(&elf)?,
        ));
    }
    write(&out_dir.join("kernels.rs"), &functions)
}

/// `as` one source from `asm/` into `object`, as 64-bit (`--64`) or 32-bit (`--32`) code.
fn assemble(
    asm_dir: &Path,
    source: &str,
    defines: &[&str],
    width: &str,
    object: &Path,
) -> Result<(), BuildError> {
    let mut command = Command::new("as");
    command.args([width, "-g", "-I"]).arg(asm_dir);
    for define in defines {
        command.args(["--defsym", define]);
    }
    run(command.arg("-o").arg(object).arg(asm_dir.join(source)))
}

/// `ld` the shared objects and the image's own object into `elf`.
fn link(
    linker_script: &Path,
    shared_objects: &[PathBuf],
    image_object: &Path,
    elf: &Path,
) -> Result<(), BuildError> {
    run(Command::new("ld")
        .args(["--fatal-warnings", "-nostdlib", "-static", "-T"])
        .arg(linker_script)
        .arg("-o")
        .arg(elf)
        .args(shared_objects)
        .arg(image_object))
}

/// Runs one tool; its own messages go to the build script's output, which cargo shows
/// when the build fails.
fn run(command: &mut Command) -> Result<(), BuildError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let status = command.status().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => BuildError::ToolMissing { tool: tool.clone() },
        _ => BuildError::ToolSpawn {
            tool: tool.clone(),
            source,
        },
    })?;
    if status.success() {
        return Ok(());
    }
    let command_line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    Err(BuildError::ToolFailed {
        command: command_line,
        status,
    })
}

/// Checks what the CPU and Umbra rely on: 64 KiB, and the reset vector's jump at 0xfff0.
fn verify_rom(image: &'static str, rom: &Path) -> Result<(), BuildError> {
    let bytes = fs::read(rom).map_err(|source| BuildError::Io {
        path: rom.to_owned(),
        source,
    })?;
    if bytes.len() != ROM_SIZE {
        return Err(BuildError::RomSize {
            image,
            size: bytes.len(),
        });
    }
    match bytes[RESET_VECTOR_OFFSET] {
        NEAR_JMP => Ok(()),
        byte => Err(BuildError::ResetVector { image, byte }),
    }
}

/// The `Image { .. }` expression for one built image.
fn image_literal(image: &ImageSpec, rom: &Path, elf: &Path) -> Result<String, BuildError> {
    Ok(format!(
        "crate::Image {{ name: {:?}, summary: {:?}, rom: include_bytes!({:?}), elf: {:?} }}",
        image.name,
        image.summary,
        utf8(rom)?,
        utf8(elf)?,
    ))
}

fn utf8(path: &Path) -> Result<&str, BuildError> {
    path.to_str().ok_or_else(|| BuildError::NonUtf8Path {
        path: path.to_owned(),
    })
}

fn env_path(name: &'static str) -> Result<PathBuf, BuildError> {
    env::var_os(name)
        .map(PathBuf::from)
        .ok_or(BuildError::MissingEnv(name))
}

fn create_dir(path: &Path) -> Result<(), BuildError> {
    fs::create_dir_all(path).map_err(|source| BuildError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), BuildError> {
    fs::write(path, contents).map_err(|source| BuildError::Io {
        path: path.to_owned(),
        source,
    })
}
