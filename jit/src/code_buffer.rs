//! The memory generated code lives in: one region, readable, writable and executable,
//! filled from the start and emptied all at once.

use std::io;

use memmap2::{MmapMut, MmapOptions};

/// The length of a `jmp rel32`, the jump at a patch site.
pub(crate) const JUMP_LEN: usize = 5;

/// A region of host memory holding generated code.
pub(crate) struct CodeBuffer {
    map: MmapMut,
    /// Bytes in use, from the start.
    used: usize,
}

impl CodeBuffer {
    /// A region of `size` bytes.
    pub(crate) fn new(size: usize) -> io::Result<CodeBuffer> {
        let map = MmapOptions::new().len(size).map_anon()?;
        // Transparent huge pages where the host has them: tens of megabytes of generated
        // code miss the host's instruction TLB less. Advice only: refused, nothing changes.
        let _ = map.advise(memmap2::Advice::HugePage);
        // SAFETY: the range is exactly the mapping just made, which this buffer owns; making
        // it executable as well changes no memory Rust code reads through references.
        let status = unsafe {
            libc::mprotect(
                map.as_ptr() as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            )
        };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(CodeBuffer { map, used: 0 })
    }

    /// The address the next code appended will have.
    pub(crate) fn next_address(&self) -> usize {
        self.map.as_ptr() as usize + self.used
    }

    /// Bytes in use.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Appends `code`, assembled for [`CodeBuffer::next_address`]; its address, or `None`
    /// when the region is full.
    pub(crate) fn append(&mut self, code: &[u8]) -> Option<usize> {
        let end = self.used.checked_add(code.len())?;
        if end > self.map.len() {
            return None;
        }
        let address = self.next_address();
        self.map[self.used..end].copy_from_slice(code);
        self.used = end;
        Some(address)
    }

    /// Forgets everything after the first `keep` bytes.
    pub(crate) fn truncate(&mut self, keep: usize) {
        self.used = keep.min(self.used);
    }

    /// Where the `jmp rel32` at `site`, in this region, jumps to.
    pub(crate) fn jump_target(&self, site: usize) -> usize {
        let at = self.jump_at(site);
        let rel = i32::from_le_bytes(self.map[at + 1..at + JUMP_LEN].try_into().expect("4 bytes"));
        (site as i64 + JUMP_LEN as i64 + i64::from(rel)) as usize
    }

    /// Points the `jmp rel32` at `site` to `target`. Both lie in this region.
    pub(crate) fn patch_jump(&mut self, site: usize, target: usize) {
        let at = self.jump_at(site);
        let rel = (target as i64 - (site as i64 + JUMP_LEN as i64)) as i32;
        self.map[at + 1..at + JUMP_LEN].copy_from_slice(&rel.to_le_bytes());
    }

    /// The offset of the `jmp rel32` at `site`, which must be one in use.
    fn jump_at(&self, site: usize) -> usize {
        let at = site - self.map.as_ptr() as usize;
        assert!(
            at + JUMP_LEN <= self.used && self.map[at] == 0xe9,
            "a patch site is a jmp rel32 in use"
        );
        at
    }
}
