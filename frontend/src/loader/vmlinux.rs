//! The kernel proper inside a bzImage: the payload its decompressor would unpack
//! (`payload_offset` and `payload_length` of the setup header, boot protocol 2.08), unpacked
//! on the host instead, and the loadable segments of the ELF `vmlinux` it holds, as Firecracker
//! boots a `vmlinux`. The guest then starts in the kernel's own `startup_64` and skips the
//! seconds (on the emulator) or minutes (where KVM emulates the guest's kernel code) of
//! running the decompressor.
//!
//! Payloads compressed with xz, gzip or zstd are unpacked; the kernel's other formats (bzip2,
//! lzma, lzo, lz4) are named in the error, and such a kernel boots through its decompressor
//! (`--boot-protocol 64`).

use std::io::Read;

use object::elf::{EM_X86_64, PT_LOAD};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object};

/// The first protocol version whose setup header locates the payload.
const PROTOCOL_PAYLOAD: u16 = 0x0208;

/// Why the kernel proper could not be taken out of a bzImage.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    /// The boot protocol predates payload_offset.
    #[error(
        "boot protocol {0:#06x} does not locate the kernel's payload (2.08 does); boot it with --boot-protocol 64"
    )]
    OldProtocol(u16),
    /// The payload lies outside the protected-mode kernel.
    #[error(
        "the payload ({offset:#x} + {length:#x}) lies outside the {kernel_len:#x}-byte protected-mode kernel"
    )]
    PayloadOutside {
        /// payload_offset.
        offset: u32,
        /// payload_length.
        length: u32,
        /// The protected-mode kernel's size.
        kernel_len: usize,
    },
    /// The payload is compressed in a format Umbra does not unpack.
    #[error(
        "the kernel is compressed with {0}, which Umbra does not unpack; boot it with --boot-protocol 64"
    )]
    Unsupported(&'static str),
    /// The payload is not in any format the kernel's decompressor knows.
    #[error("the kernel's payload is in no format Linux compresses it in (magic {0:02x?})")]
    UnknownFormat(Vec<u8>),
    /// The payload does not decompress.
    #[error("the kernel's {format} payload does not decompress")]
    Corrupt {
        /// The format.
        format: &'static str,
        /// The decompressor's error.
        #[source]
        error: std::io::Error,
    },
    /// The payload is not an x86-64 ELF.
    #[error(
        "the kernel's payload is not an x86-64 ELF ({0}); a 32-bit kernel boots with --boot-protocol 32"
    )]
    NotElf(String),
    /// The ELF has nothing to load.
    #[error("the kernel's ELF has no loadable segment")]
    NoSegments,
}

/// A segment of the kernel, where it goes in guest physical memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its guest physical address (p_paddr).
    pub addr: u64,
    /// The bytes from the file.
    pub data: Vec<u8>,
    /// Its size in memory, at least `data`'s (the rest is zeros).
    pub mem_size: u64,
}

/// The kernel proper, ready to be copied into guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmlinux {
    /// The physical address of `startup_64` (the ELF's entry).
    pub entry: u64,
    /// The loadable segments.
    pub segments: Vec<Segment>,
}

impl Vmlinux {
    /// The lowest address a segment starts at.
    pub fn start(&self) -> u64 {
        self.segments.iter().map(|s| s.addr).min().unwrap_or(0)
    }

    /// The address past the highest end of a segment.
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.addr + s.mem_size)
            .max()
            .unwrap_or(0)
    }
}

/// The kernel proper of a bzImage whose setup header has protocol `version` and the payload
/// at `offset`, `length` bytes long, in its protected-mode part `kernel`.
pub fn unpack(
    version: u16,
    offset: u32,
    length: u32,
    kernel: &[u8],
) -> Result<Vmlinux, VmlinuxError> {
    if version < PROTOCOL_PAYLOAD {
        return Err(VmlinuxError::OldProtocol(version));
    }
    let payload = (offset as usize)
        .checked_add(length as usize)
        .and_then(|end| kernel.get(offset as usize..end))
        .ok_or(VmlinuxError::PayloadOutside {
            offset,
            length,
            kernel_len: kernel.len(),
        })?;
    segments(&decompress(payload)?)
}

/// The formats Linux compresses its payload in, by their magic numbers.
const FORMATS: [(&[u8], &str); 7] = [
    (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
    (&[0x1f, 0x8b], "gzip"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (b"BZh", "bzip2"),
    (&[0x5d, 0, 0], "lzma"),
    (&[0x89, b'L', b'Z', b'O'], "lzo"),
    (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
];

/// Decompresses a bzImage's `payload`: an xz, gzip or zstd stream, optionally followed by the
/// uncompressed size the kernel's build appends (a stream decoder stops before it).
pub fn decompress(payload: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let Some(&(_, format)) = FORMATS.iter().find(|(magic, _)| payload.starts_with(magic)) else {
        return Err(VmlinuxError::UnknownFormat(
            payload.iter().take(6).copied().collect(),
        ));
    };
    let mut out = Vec::new();
    let result = match format {
        "xz" => lzma_rust2::XzReader::new(payload, false).read_to_end(&mut out),
        "gzip" => flate2::read::GzDecoder::new(payload).read_to_end(&mut out),
        "zstd" => ruzstd::decoding::StreamingDecoder::new(payload)
            .map_err(std::io::Error::other)
            .and_then(|mut decoder| decoder.read_to_end(&mut out)),
        other => return Err(VmlinuxError::Unsupported(other)),
    };
    result.map_err(|error| VmlinuxError::Corrupt { format, error })?;
    Ok(out)
}

/// The entry and the loadable segments of the x86-64 ELF `elf`.
fn segments(elf: &[u8]) -> Result<Vmlinux, VmlinuxError> {
    let file =
        ElfFile64::<Endianness>::parse(elf).map_err(|e| VmlinuxError::NotElf(e.to_string()))?;
    let endian = file.endian();
    if file.elf_header().e_machine(endian) != EM_X86_64 {
        return Err(VmlinuxError::NotElf(format!(
            "machine {}",
            file.elf_header().e_machine(endian)
        )));
    }
    let segments = file
        .elf_program_headers()
        .iter()
        .filter(|header| header.p_type(endian) == PT_LOAD)
        .map(|header| {
            let data = header
                .data(endian, elf)
                .map_err(|_| VmlinuxError::NotElf("a segment lies outside the file".into()))?;
            Ok(Segment {
                addr: header.p_paddr(endian),
                data: data.to_vec(),
                mem_size: header.p_memsz(endian).max(data.len() as u64),
            })
        })
        .collect::<Result<Vec<_>, VmlinuxError>>()?;
    if segments.is_empty() {
        return Err(VmlinuxError::NoSegments);
    }
    Ok(Vmlinux {
        entry: file.entry(),
        segments,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A minimal x86-64 ELF: its header, one program header, and `code` loaded at
    /// 0x1000000 with `bss` more zero bytes after it.
    pub(crate) fn tiny_elf(code: &[u8], bss: u64) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[6] = 1; // version
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&EM_X86_64.0.to_le_bytes());
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // entry
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ph = &mut elf[64..];
        ph[..4].copy_from_slice(&PT_LOAD.0.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // offset
        ph[16..24].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes()); // vaddr
        ph[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // paddr
        ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&(code.len() as u64 + bss).to_le_bytes());
        elf.extend_from_slice(code);
        elf
    }

    /// `elf` gzip-compressed, followed by its size, as the kernel's build packs it.
    pub(crate) fn gzip_payload(elf: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(elf).unwrap();
        let mut payload = encoder.finish().unwrap();
        payload.extend((elf.len() as u32).to_le_bytes());
        payload
    }

    #[test]
    fn a_gzip_payload_gives_its_segments_and_entry() {
        let payload = gzip_payload(&tiny_elf(&[0x90, 0xf4], 0x1000));
        let mut kernel = vec![0xcc; 0x40];
        kernel.extend(&payload);
        let vmlinux = unpack(0x020f, 0x40, payload.len() as u32, &kernel).unwrap();
        assert_eq!(vmlinux.entry, 0x100_0000);
        assert_eq!(
            vmlinux.segments,
            [Segment {
                addr: 0x100_0000,
                data: vec![0x90, 0xf4],
                mem_size: 0x1002
            }]
        );
        assert_eq!((vmlinux.start(), vmlinux.end()), (0x100_0000, 0x100_1002));
    }

    #[test]
    fn bad_payloads_are_named() {
        let error = |kernel: &[u8], offset, length| {
            unpack(0x020f, offset, length, kernel)
                .unwrap_err()
                .to_string()
        };
        assert!(error(&[0; 16], 8, 9).contains("lies outside"));
        assert!(error(&[0x02, 0x21, 0x4c, 0x18, 0], 0, 5).contains("compressed with lz4"));
        assert!(error(b"hello", 0, 5).contains("no format"));
        let mut corrupt = gzip_payload(&tiny_elf(&[0x90], 0));
        corrupt.truncate(corrupt.len() / 2);
        assert!(
            error(&corrupt, 0, corrupt.len() as u32).contains("gzip payload does not decompress")
        );
        let not_elf = gzip_payload(b"not an elf at all");
        assert!(error(&not_elf, 0, not_elf.len() as u32).contains("not an x86-64 ELF"));
        assert!(
            unpack(0x0207, 0, 1, &[0])
                .unwrap_err()
                .to_string()
                .contains("2.08")
        );
    }
}
