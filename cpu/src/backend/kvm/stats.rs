//! KVM's binary statistics (KVM_GET_STATS_FD, Documentation/virt/kvm/api.rst 4.134): a file
//! per VM and per vCPU holding a header, a descriptor per statistic (its name, type, unit and
//! where its values are) and the values, read with `pread`.
//!
//! Only single-value statistics are returned (counters, instant and peak values); histograms
//! are left out.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{
    KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_INSTANT, KVM_STATS_TYPE_MASK, KVM_STATS_TYPE_PEAK,
    KVMIO, kvm_stats_desc, kvm_stats_header,
};
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

use super::KvmError;
use crate::backend::BackendError;

ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);

/// The most statistics and the longest name read, so that a corrupt header cannot make Umbra
/// allocate without bound.
const MAX_DESCRIPTORS: u32 = 4096;
const MAX_NAME: u32 = 4096;

/// The single-value statistics of the VM or vCPU behind `fd`, by name.
pub(super) fn read(fd: &impl AsRawFd) -> Result<Vec<(String, u64)>, BackendError> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor or -1.
    let raw = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
    if raw < 0 {
        return Err(KvmError::ioctl("KVM_GET_STATS_FD")(
            kvm_ioctls::Error::last(),
        ));
    }
    // SAFETY: `raw` is a file descriptor the kernel just gave us and nothing else owns.
    let file = unsafe { File::from_raw_fd(raw) };
    parse(|buf, offset| file.read_exact_at(buf, offset).is_ok()).ok_or_else(|| {
        KvmError::ioctl("reading the binary stats")(kvm_ioctls::Error::new(libc::EIO))
    })
}

/// Reads the statistics through `read_at(buf, offset)`, which fills `buf` from the file at
/// `offset` or says it could not; `None` for a malformed file.
fn parse(read_at: impl Fn(&mut [u8], u64) -> bool) -> Option<Vec<(String, u64)>> {
    let mut header_bytes = [0u8; size_of::<kvm_stats_header>()];
    read_at(&mut header_bytes, 0).then_some(())?;
    let field = |at: usize| u32::from_ne_bytes(header_bytes[at..at + 4].try_into().unwrap());
    let (name_size, num_desc, desc_offset, data_offset) =
        (field(4), field(8), field(16), field(20));
    if num_desc > MAX_DESCRIPTORS || name_size > MAX_NAME {
        return None;
    }
    let desc_size = size_of::<kvm_stats_desc>() + name_size as usize;
    let mut descriptors = vec![0u8; desc_size * num_desc as usize];
    read_at(&mut descriptors, desc_offset.into()).then_some(())?;
    let mut stats = Vec::new();
    for desc in descriptors.chunks_exact(desc_size) {
        let flags = u32::from_ne_bytes(desc[0..4].try_into().unwrap());
        let size = u16::from_ne_bytes(desc[6..8].try_into().unwrap());
        let offset = u32::from_ne_bytes(desc[8..12].try_into().unwrap());
        let single = matches!(
            flags & KVM_STATS_TYPE_MASK,
            KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_TYPE_INSTANT | KVM_STATS_TYPE_PEAK
        );
        if !single || size != 1 {
            continue;
        }
        let name = &desc[size_of::<kvm_stats_desc>()..];
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        let mut value = [0u8; 8];
        read_at(&mut value, u64::from(data_offset) + u64::from(offset)).then_some(())?;
        stats.push((
            String::from_utf8_lossy(name).into_owned(),
            u64::from_ne_bytes(value),
        ));
    }
    Some(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stats file with a counter, a histogram (left out) and a peak value.
    fn file() -> Vec<u8> {
        let name_size = 16u32;
        let desc_size = 16 + name_size as usize;
        let mut bytes = vec![0u8; 24];
        bytes[4..8].copy_from_slice(&name_size.to_ne_bytes());
        bytes[8..12].copy_from_slice(&3u32.to_ne_bytes());
        bytes[16..20].copy_from_slice(&24u32.to_ne_bytes());
        let data_offset = 24 + 3 * desc_size as u32;
        bytes[20..24].copy_from_slice(&data_offset.to_ne_bytes());
        let stats: [(&str, u32, u16, u32); 3] = [
            ("pf_fixed", KVM_STATS_TYPE_CUMULATIVE, 1, 0),
            ("halt_hist", 3, 4, 8),
            ("max_rmap", KVM_STATS_TYPE_PEAK, 1, 40),
        ];
        for (name, kind, size, offset) in stats {
            let mut desc = vec![0u8; desc_size];
            desc[0..4].copy_from_slice(&kind.to_ne_bytes());
            desc[6..8].copy_from_slice(&size.to_ne_bytes());
            desc[8..12].copy_from_slice(&offset.to_ne_bytes());
            desc[16..16 + name.len()].copy_from_slice(name.as_bytes());
            bytes.extend(desc);
        }
        for value in [7u64, 1, 2, 3, 4, 9] {
            bytes.extend(value.to_ne_bytes());
        }
        bytes
    }

    fn reader(bytes: &[u8]) -> impl Fn(&mut [u8], u64) -> bool + '_ {
        move |buf, offset| {
            let start = offset as usize;
            match bytes.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn single_values_are_read_and_histograms_left_out() {
        let bytes = file();
        let stats = parse(reader(&bytes)).unwrap();
        assert_eq!(
            stats,
            [("pf_fixed".to_owned(), 7), ("max_rmap".to_owned(), 9)]
        );
    }

    #[test]
    fn truncated_files_are_refused() {
        let bytes = file();
        for len in [0, 10, 40, bytes.len() - 1] {
            assert_eq!(parse(reader(&bytes[..len])), None, "{len}");
        }
    }
}
