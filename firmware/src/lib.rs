//! Guest programs built into Umbra.
//!
//! Each image is a flat 64 KiB ROM that starts at the x86 reset vector as a BIOS does, so the
//! same bytes run on Umbra and on QEMU (`qemu-system-x86_64 -bios <rom>`). The programs are
//! GNU assembly in `asm/`, assembled and linked by `build.rs` with binutils; the linked ELF,
//! with symbols and line info, stays beside each ROM for gdb. `README.md` in this crate
//! describes the machine they expect, their memory map and their output.
//!
//! ```
//! let demo = umbra_firmware::find("demo").expect("demo is built in");
//! assert_eq!(demo.rom.len(), umbra_firmware::ROM_SIZE);
//! ```

#![deny(missing_docs)]

use std::fmt;

/// The size of every ROM image. The machine maps it read-only at
/// `0xFFFF_0000..=0xFFFF_FFFF` (and aliases it at `0xF_0000..=0xF_FFFF`); the CPU starts at
/// its offset `0xFFF0`.
pub const ROM_SIZE: usize = 0x10000;

/// A guest program built into Umbra.
pub struct Image {
    /// The name it is picked by, e.g. `"demo"`.
    pub name: &'static str,
    /// One line for `umbra firmware list`.
    pub summary: &'static str,
    /// The flat ROM, exactly [`ROM_SIZE`] bytes.
    pub rom: &'static [u8],
    /// Absolute path of the linked ELF with symbols (in the build's `OUT_DIR`), for gdb.
    pub elf: &'static str,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("rom_len", &self.rom.len())
            .field("elf", &self.elf)
            .finish()
    }
}

/// The table `build.rs` writes from its list of built-in images.
static BUILTIN: &[Image] = &include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The images users can pick by name.
pub fn builtin() -> &'static [Image] {
    BUILTIN
}

/// The built-in image called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Image> {
    BUILTIN.iter().find(|image| image.name == name)
}

pub mod test_images {
    //! Variants built only for tests; [`builtin`](crate::builtin) does not list them.

    include!(concat!(env!("OUT_DIR"), "/test_images.rs"));
}

pub mod kernels {
    //! Kernels that boot without firmware, for `umbra run --kernel` and
    //! `qemu-system-x86_64 -kernel`: multiboot ELF32 images linked at 1 MiB. Each function
    //! gives the path of the built ELF.

    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, ObjectSymbol};

    /// Where the ROM is linked: its last byte is the last byte below 4 GiB.
    const ROM_BASE: u64 = (1 << 32) - ROM_SIZE as u64;
    const RESET_VECTOR_OFFSET: usize = 0xfff0;
    const NEAR_JMP: u8 = 0xe9;

    fn all_images() -> impl Iterator<Item = &'static Image> {
        builtin().iter().chain([
            test_images::demo_fail(),
            test_images::bench_compute_quick(),
            test_images::pt_modify(),
        ])
    }

    fn symbol_address(elf: &object::File<'_>, name: &str) -> u64 {
        elf.symbols()
            .find(|symbol| symbol.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .address()
    }

    #[test]
    fn builtin_lists_the_images_users_pick() {
        let names: Vec<_> = builtin().iter().map(|image| image.name).collect();
        assert_eq!(
            names,
            [
                "demo",
                "bench-compute",
                "mmu-access",
                "bench-ctxsw",
                "bench-ctxsw-warmup",
                "irq-test",
                "echo"
            ]
        );
    }

    #[test]
    fn find_knows_builtin_images_only() {
        assert_eq!(find("demo").map(|image| image.name), Some("demo"));
        assert!(find("demo-fail").is_none());
        assert!(find("").is_none());
        assert_eq!(test_images::demo_fail().name, "demo-fail");
    }

    #[test]
    fn summaries_are_single_lines() {
        for image in all_images() {
            assert!(!image.summary.is_empty(), "{}", image.name);
            assert!(!image.summary.contains('\n'), "{}", image.name);
        }
    }

    #[test]
    fn roms_are_rom_size() {
        for image in all_images() {
            assert_eq!(image.rom.len(), ROM_SIZE, "{}", image.name);
        }
    }

    #[test]
    fn variants_differ() {
        assert_ne!(find("demo").unwrap().rom, test_images::demo_fail().rom);
    }

    /// The CPU starts at CS base 0xffff0000, IP 0xfff0; boot.s puts a near jump there whose
    /// target, an offset in that same segment, is `real_mode_start`.
    #[test]
    fn reset_vector_jumps_to_real_mode_start() {
        for image in all_images() {
            let elf_bytes = std::fs::read(image.elf).unwrap();
            let elf = object::File::parse(&*elf_bytes).unwrap();
            let rom = image.rom;
            assert_eq!(rom[RESET_VECTOR_OFFSET], NEAR_JMP, "{}", image.name);
            let displacement =
                u16::from_le_bytes([rom[RESET_VECTOR_OFFSET + 1], rom[RESET_VECTOR_OFFSET + 2]]);
            let next_ip = (RESET_VECTOR_OFFSET + 3) as u16;
            let target = ROM_BASE + u64::from(next_ip.wrapping_add(displacement));
            assert_eq!(
                target,
                symbol_address(&elf, "real_mode_start"),
                "{}",
                image.name
            );
        }
    }

    /// The ELF handed to gdb describes exactly the ROM that runs.
    #[test]
    fn elf_describes_the_rom() {
        for image in all_images() {
            let elf_bytes = std::fs::read(image.elf).unwrap();
            let elf = object::File::parse(&*elf_bytes).unwrap();
            let reset_vector = ROM_BASE + RESET_VECTOR_OFFSET as u64;
            assert_eq!(elf.entry(), reset_vector, "{}", image.name);
            assert_eq!(symbol_address(&elf, "reset_vector"), reset_vector);
            let rom_section = elf.section_by_name(".rom").unwrap();
            assert_eq!(rom_section.address(), ROM_BASE, "{}", image.name);
            assert_eq!(rom_section.data().unwrap(), image.rom, "{}", image.name);
            let image_main = symbol_address(&elf, "image_main");
            assert!(
                (ROM_BASE..reset_vector).contains(&image_main),
                "{}",
                image.name
            );
        }
    }
}
