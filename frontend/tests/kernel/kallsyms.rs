//! A kernel symbol's address from a bzImage alone, for kernels shipped without a System.map
//! (Debian's `/boot/System.map-*` is a placeholder): the vmlinux is decompressed from the
//! bzImage's payload (by the loader's [`vmlinux::decompress`]) and the symbol looked up in
//! the kernel's own kallsyms tables.
//!
//! The tables (scripts/kallsyms.c writes them into `.rodata`, each label 8-byte aligned):
//!
//! - `kallsyms_num_syms`: the symbol count N, a 32-bit word;
//! - `kallsyms_names`, right after it: N entries, each a length (one byte, or two when the
//!   first has bit 7 set: 7 low bits, then the next 8) and that many token numbers; the
//!   expanded name starts with the symbol's type letter (`T`, `t`, `D`, ...);
//! - `kallsyms_markers`, right after the names: the offset in `kallsyms_names` of every
//!   256th entry, starting with 0;
//! - `kallsyms_token_table`: 256 NUL-terminated strings, and `kallsyms_token_index`: their
//!   256 16-bit offsets in the table, starting with 0;
//! - `kallsyms_offsets`: N 32-bit values, with `kallsyms_relative_base` (64 bits) after them.
//!   Where they sit moved between kernels: before `kallsyms_num_syms` until Linux 6.3, after
//!   the token index since. With the x86-64 default (absolute per-CPU symbols), a negative
//!   offset `o` means the address `relative_base - 1 - o`; otherwise the address is
//!   `relative_base + o`.
//!
//! Nothing records where the tables start in a stripped vmlinux, so they are found by their
//! shape: the token index is the only place where 256 small steps of 16-bit offsets lead
//! from 0 through a table of 256 short strings that ends just before it, and the names are
//! where a plausible count is followed by entries that expand to typed, printable names and
//! end where markers that agree with them begin.

use object::{Object, ObjectSection, SectionKind};
use umbra::loader::vmlinux;

/// Where the setup header keeps the number of 512-byte setup sectors.
const SETUP_SECTS: usize = 0x1f1;
/// Where the setup header keeps the payload's offset (from the protected-mode code) and length.
const PAYLOAD_OFFSET: usize = 0x248;
/// The longest token scripts/kallsyms.c makes, with its NUL (a loose bound).
const LONGEST_TOKEN: usize = 64;
/// Bounds on a plausible symbol count.
const SYMBOLS: std::ops::Range<u32> = 1000..1 << 22;
/// How many names are expanded to reject a candidate for `kallsyms_names` early.
const NAMES_CHECKED_EARLY: usize = 64;
/// The symbol types `nm` prints, one of which starts every expanded name.
const SYMBOL_TYPES: &[u8] = b"aAbBdDgGiINnpPrRsStTuUvVwW";

/// The address of the symbol `name` in the kernel `bzimage`, as linked (no KASLR).
pub fn symbol_address(bzimage: &[u8], name: &str) -> Result<u64, String> {
    let vmlinux = vmlinux::decompress(payload(bzimage)?).map_err(|e| e.to_string())?;
    let tokens = TokenTable::find(&vmlinux).ok_or("no kallsyms token table in the vmlinux")?;
    let names = Names::find(&vmlinux, &tokens).ok_or("no kallsyms names in the vmlinux")?;
    let index = names
        .position(&vmlinux, &tokens, name)
        .ok_or_else(|| format!("no symbol {name} in the kernel's kallsyms"))?;
    let address = names.address(&vmlinux, &tokens, index)?;
    let elf = object::File::parse(&*vmlinux).map_err(|e| format!("the vmlinux: {e}"))?;
    let in_code = elf.sections().any(|section| {
        section.kind() == SectionKind::Text
            && (section.address()..section.address() + section.size()).contains(&address)
    });
    if !in_code {
        return Err(format!(
            "{name} at {address:#x} is in none of the vmlinux's code sections"
        ));
    }
    Ok(address)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn align8(offset: usize) -> usize {
    offset.next_multiple_of(8)
}

/// The compressed vmlinux in a bzImage, without the 4-byte uncompressed size the kernel's
/// build appends to it.
fn payload(bzimage: &[u8]) -> Result<&[u8], String> {
    let setup_sects = match bzimage.get(SETUP_SECTS) {
        None => return Err("too short for a bzImage".into()),
        Some(0) => 4,
        Some(&n) => usize::from(n),
    };
    let offset = read_u32(bzimage, PAYLOAD_OFFSET).ok_or("too short for a bzImage")?;
    let length = read_u32(bzimage, PAYLOAD_OFFSET + 4).ok_or("too short for a bzImage")?;
    let start = (setup_sects + 1) * 512 + offset as usize;
    let end = start + (length as usize).saturating_sub(4);
    bzimage
        .get(start..end)
        .ok_or_else(|| "the payload lies outside the bzImage".to_owned())
}

/// `kallsyms_token_table` as its 256 strings, and where `kallsyms_token_index` ends.
struct TokenTable {
    tokens: Vec<Vec<u8>>,
    index_end: usize,
}

impl TokenTable {
    fn find(vmlinux: &[u8]) -> Option<TokenTable> {
        (0..vmlinux.len().saturating_sub(512))
            .step_by(8)
            .find_map(|at| Self::at_index(vmlinux, at))
    }

    /// The table whose index starts at `at`, if one does.
    fn at_index(vmlinux: &[u8], at: usize) -> Option<TokenTable> {
        if vmlinux[at..at + 2] != [0, 0] {
            return None;
        }
        let index: Vec<usize> = vmlinux[at..at + 512]
            .chunks(2)
            .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])))
            .collect();
        let steps_fit = index
            .windows(2)
            .all(|pair| (2..=LONGEST_TOKEN).contains(&pair[1].saturating_sub(pair[0])));
        if !steps_fit {
            return None;
        }
        // The last token, at least one byte and its NUL, ends less than 8 bytes before the
        // index: try each place the table could then start.
        let last = index[255];
        (2..LONGEST_TOKEN + 8).find_map(|back| {
            let start = at.checked_sub(last + back)?;
            let tokens = (0..256)
                .map(|i| {
                    let from = start + index[i];
                    let to = match index.get(i + 1) {
                        Some(next) => start + next - 1,
                        None => from + vmlinux[from..at].iter().position(|&b| b == 0)?,
                    };
                    let token = &vmlinux[from..to];
                    let printable = !token.is_empty() && token.iter().all(u8::is_ascii_graphic);
                    (printable && vmlinux[to] == 0).then(|| token.to_vec())
                })
                .collect::<Option<Vec<_>>>()?;
            let last_end = start + last + tokens[255].len() + 1;
            (at - last_end < 8).then_some(TokenTable {
                tokens,
                index_end: at + 512,
            })
        })
    }
}

/// `kallsyms_names`: where it starts and how many entries it has.
struct Names {
    start: usize,
    count: usize,
}

impl Names {
    fn find(vmlinux: &[u8], tokens: &TokenTable) -> Option<Names> {
        (8..vmlinux.len().saturating_sub(8))
            .step_by(8)
            .find_map(|start| Self::at(vmlinux, tokens, start))
    }

    /// The names, if they start at `start`: the count before them is plausible, the first
    /// names expand to typed, printable names, and markers that agree with every entry follow.
    fn at(vmlinux: &[u8], tokens: &TokenTable, start: usize) -> Option<Names> {
        let count = read_u32(vmlinux, start - 8)?;
        if !SYMBOLS.contains(&count) || read_u32(vmlinux, start - 4)? != 0 {
            return None;
        }
        let names = Names {
            start,
            count: count as usize,
        };
        let mut entries = names.entries(vmlinux);
        let plausible = entries.by_ref().take(NAMES_CHECKED_EARLY).all(|entry| {
            entry.is_some_and(|(_, name)| {
                let name = expand(tokens, name);
                SYMBOL_TYPES.contains(&name[0]) && name.iter().all(u8::is_ascii_graphic)
            })
        });
        if !plausible {
            return None;
        }
        // The markers: each 256th entry's offset, as 32-bit or 64-bit words.
        let mut offsets = Vec::with_capacity(names.count.div_ceil(256));
        let mut end = start;
        for (i, entry) in names.entries(vmlinux).enumerate() {
            let (at, name) = entry?;
            if i % 256 == 0 {
                offsets.push(at - start);
            }
            end = at + name.len();
        }
        let markers = align8(end);
        let agree = |size: usize| {
            offsets.iter().enumerate().all(|(i, &offset)| {
                let at = markers + i * size;
                let marker = match size {
                    4 => read_u32(vmlinux, at).map(u64::from),
                    _ => read_u64(vmlinux, at),
                };
                marker == Some(offset as u64)
            })
        };
        (agree(4) || agree(8)).then_some(names)
    }

    /// Each entry's place and its token numbers, in order; `None` where an entry runs past
    /// the end of the vmlinux.
    fn entries<'a>(
        &self,
        vmlinux: &'a [u8],
    ) -> impl Iterator<Item = Option<(usize, &'a [u8])>> + 'a {
        let mut at = self.start;
        (0..self.count).map(move |_| {
            let first = *vmlinux.get(at)?;
            let (length, header) = if first & 0x80 != 0 {
                let second = *vmlinux.get(at + 1)?;
                (usize::from(first & 0x7f) | usize::from(second) << 7, 2)
            } else {
                (usize::from(first), 1)
            };
            let entry = at;
            let name = vmlinux.get(at + header..at + header + length)?;
            at += header + length;
            (length > 0).then_some((entry, name))
        })
    }

    /// The index of the code symbol (type `T` or `t`) called `name`.
    fn position(&self, vmlinux: &[u8], tokens: &TokenTable, name: &str) -> Option<usize> {
        self.entries(vmlinux).position(|entry| {
            entry.is_some_and(|(_, tokens_of)| {
                let expanded = expand(tokens, tokens_of);
                matches!(expanded[0], b'T' | b't') && &expanded[1..] == name.as_bytes()
            })
        })
    }

    /// The address of symbol `index`, from `kallsyms_offsets` and `kallsyms_relative_base`
    /// wherever this kernel put them.
    fn address(&self, vmlinux: &[u8], tokens: &TokenTable, index: usize) -> Result<u64, String> {
        let offsets_size = align8(4 * self.count);
        // Before the count (up to Linux 6.3), or after the token index (since).
        let before = (self.start - 16)
            .checked_sub(offsets_size)
            .map(|offsets| (offsets, self.start - 16));
        let after = Some((
            align8(tokens.index_end),
            align8(tokens.index_end) + offsets_size,
        ));
        let (offsets, base) = [before, after]
            .into_iter()
            .flatten()
            .find(|&(_, base)| read_u64(vmlinux, base).is_some_and(is_kernel_address))
            .ok_or("no kallsyms_relative_base next to the names or the token index")?;
        let base = read_u64(vmlinux, base).expect("checked above");
        let offset = read_u32(vmlinux, offsets + 4 * index).expect("inside the vmlinux") as i32;
        Ok(if offset < 0 {
            base.wrapping_sub(1).wrapping_sub(i64::from(offset) as u64)
        } else {
            base.wrapping_add(offset as u64)
        })
    }
}

/// Whether `address` is in the top 2 GiB, where x86-64 kernels are linked.
fn is_kernel_address(address: u64) -> bool {
    address >= 0xffff_ffff_8000_0000
}

/// A name from its token numbers.
fn expand(tokens: &TokenTable, name: &[u8]) -> Vec<u8> {
    name.iter()
        .flat_map(|&token| tokens.tokens[usize::from(token)].iter().copied())
        .collect()
}
