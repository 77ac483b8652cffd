//! The Linux guest the Linux tests share: Debian's kernel from `/boot`, the initramfs that
//! `bench/initramfs.sh` builds from busybox-static, and the lines its `/init` prints.
// Each test binary uses only some of these helpers.
#![allow(dead_code)]

pub mod kallsyms;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::have_program;

/// The line `/init` prints once userspace runs (the kernel's version follows it).
pub const USERSPACE_LINE: &str = "umbra-init: userspace reached";
/// The line `/init` prints last, before it powers off (with `umbra.quick` on the kernel
/// command line it skips its workloads and prints this right after [`USERSPACE_LINE`]).
pub const DONE_LINE: &str = "umbra-init: done";

/// The newest `/boot/vmlinuz-*`, if any.
pub fn host_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels.pop()
}

/// The kernel and what building the initramfs takes, if this host has them; if not, says
/// `test` is skipped.
pub fn guest_available(test: &str) -> Option<PathBuf> {
    let Some(kernel) = host_kernel() else {
        eprintln!("skipped {test}: no /boot/vmlinuz-* (apt-get install linux-image-amd64)");
        return None;
    };
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipped {test}: no /bin/busybox (apt-get install busybox-static)");
        return None;
    }
    ["cpio", "gzip", "readelf"]
        .iter()
        .all(|program| have_program(test, program))
        .then_some(kernel)
}

/// `umbra run`'s arguments for this guest on `accel`: 512 MiB, `kernel`, `initrd`, and
/// `append` as the kernel's command line.
pub fn guest_args(accel: &str, kernel: &Path, initrd: &Path, append: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--accel", accel, "-m", "512M", "-kernel"]
        .map(OsString::from)
        .into();
    args.extend([
        kernel.into(),
        "-initrd".into(),
        initrd.into(),
        "-append".into(),
        append.into(),
    ]);
    args
}

/// Builds the initramfs in `dir` with `bench/initramfs.sh`; returns its path.
pub fn initramfs(dir: &Path) -> PathBuf {
    let archive = dir.join("initramfs.cpio.gz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/initramfs.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(&archive)
        .status()
        .expect("bash starts");
    assert!(status.success(), "bench/initramfs.sh failed");
    archive
}
