//! Boots the host's Debian kernel (`/boot/vmlinuz-*`) on the emulator with a busybox
//! initramfs built here, through both of Linux's entry points, to the line the initramfs's
//! `/init` prints from userspace. Each boot takes minutes on the interpreter (most of it in
//! the kernel's XZ decompressor), so the test is ignored by default:
//!
//! ```sh
//! cargo test --release -p umbra --test linux_boot -- --ignored --nocapture
//! ```
//!
//! It needs a kernel in `/boot` (`apt-get install linux-image-amd64`), `/bin/busybox`
//! (`apt-get install busybox-static`) and `cpio`, and says it skipped when one is missing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{have_program, text};

/// The line `/init` prints once userspace runs.
const USERSPACE_LINE: &str = "umbra-init: userspace reached";

/// The newest `/boot/vmlinuz-*`, if any.
fn host_kernel() -> Option<PathBuf> {
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

/// An initramfs (newc cpio) in `dir` with busybox and an `/init` that prints
/// [`USERSPACE_LINE`] and the kernel's version, then reboots (the i8042 reset ends the run).
fn busybox_initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mkdir -p /proc\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox echo \"{USERSPACE_LINE}: $(/bin/busybox cat /proc/version)\"\n\
         /bin/busybox reboot -f\n"
    );
    std::fs::write(root.join("init"), init).unwrap();
    Command::new("chmod")
        .args(["+x", "init", "bin/busybox"])
        .current_dir(&root)
        .status()
        .unwrap();
    let archive = dir.join("initramfs.cpio");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&archive).unwrap())
        .spawn()
        .expect("cpio starts");
    cpio.stdin
        .take()
        .unwrap()
        .write_all(b".\nbin\nbin/busybox\ninit\n")
        .unwrap();
    assert!(cpio.wait().unwrap().success());
    archive
}

fn boots_to_userspace(protocol: &str) {
    let test = format!("linux_boots_to_userspace_{protocol}");
    let Some(kernel) = host_kernel() else {
        eprintln!("skipped {test}: no /boot/vmlinuz-*");
        return;
    };
    if !Path::new("/bin/busybox").exists() || !have_program(&test, "cpio") {
        eprintln!("skipped {test}: needs /bin/busybox and cpio");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initrd = busybox_initramfs(dir.path());
    let out = Command::new("timeout")
        .arg("1800")
        .arg(env!("CARGO_BIN_EXE_umbra"))
        .args([
            "run",
            "--accel",
            "emu",
            "-m",
            "512M",
            "--boot-protocol",
            protocol,
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 pci=off"])
        .output()
        .expect("umbra starts");
    let serial = text(&out.stdout);
    eprintln!("{serial}{}", text(&out.stderr));
    assert!(
        serial.starts_with("[    0.000000] Linux version "),
        "{serial}"
    );
    assert!(serial.contains(USERSPACE_LINE), "{serial}");
    assert!(text(&out.stderr).contains("Reset"), "{}", text(&out.stderr));
}

#[test]
#[ignore = "minutes on the interpreter: run with --ignored"]
fn linux_boots_to_userspace_through_the_64_bit_entry() {
    boots_to_userspace("64");
}

#[test]
#[ignore = "minutes on the interpreter: run with --ignored"]
fn linux_boots_to_userspace_through_the_32_bit_entry() {
    boots_to_userspace("32");
}
