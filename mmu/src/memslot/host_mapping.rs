//! Host memory that backs guest physical memory.

use std::io;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::MemslotError;

/// An anonymous, private host mapping that slots map guest frames onto.
///
/// The mapping asks for no swap reservation (`MAP_NORESERVE`), so a large guest costs host memory
/// only for the pages it touches. It is unmapped when the last `Arc` to it goes, which is never
/// while a slot over it is alive. Its bytes are only ever reached through raw pointers, never
/// through Rust references, because the guest (and other vCPU threads) may change them at any time.
pub struct HostMapping {
    map: MmapRaw,
}

impl HostMapping {
    /// Maps `len` bytes of zeroed anonymous memory.
    ///
    /// Fails with [`MemslotError::MappingFailed`] when `len` is zero or the host cannot map that
    /// much address space.
    pub fn anonymous(len: usize) -> Result<Arc<Self>, MemslotError> {
        let failed = |source| MemslotError::MappingFailed { len, source };
        if len == 0 {
            return Err(failed(io::ErrorKind::InvalidInput.into()));
        }
        let map = MmapOptions::new()
            .len(len)
            .no_reserve_swap()
            .map_anon()
            .map_err(failed)?;
        // Transparent huge pages where the host has them, as QEMU asks for guest RAM: fewer
        // host TLB misses on guest memory. Advice only: refused, nothing changes.
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Arc::new(Self { map: map.into() }))
    }

    /// The host address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty; never true, as [`HostMapping::anonymous`] refuses zero.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

impl std::fmt::Debug for HostMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMapping")
            .field("ptr", &self.as_ptr())
            .field("len", &format_args!("{:#x}", self.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_zeroed_page_aligned_memory() {
        let mapping = HostMapping::anonymous(3 * 4096).unwrap();
        assert_eq!(mapping.len(), 3 * 4096);
        assert!(!mapping.is_empty());
        assert_eq!(mapping.as_ptr() as usize % 4096, 0);
        // SAFETY: the mapping is 3 pages long and alive; nothing else uses it.
        assert_eq!(unsafe { mapping.as_ptr().add(2 * 4096 + 7).read() }, 0);
    }

    #[test]
    fn refuses_zero_and_impossible_sizes() {
        for len in [0, 1 << 62, usize::MAX] {
            match HostMapping::anonymous(len) {
                Err(MemslotError::MappingFailed { len: got, .. }) => assert_eq!(got, len),
                other => panic!("{len:#x}: expected MappingFailed, got {other:?}"),
            }
        }
    }
}
