//! Boots the host's Debian kernel (`/boot/vmlinuz-*`) on the emulator with the busybox
//! initramfs of `bench/initramfs.sh`, unpacked by Umbra (the default) and through both of the
//! bzImage's entry points, to the lines its `/init` prints from userspace and at its end
//! (without its workloads: `umbra.quick`); its poweroff then halts the machine (Umbra has no
//! ACPI to power off with), which ends the run. With the JIT a boot takes seconds (on the
//! interpreter alone it took minutes, most of them in the kernel's XZ decompressor, which the
//! unpacked boot skips).
//!
//! It needs a kernel in `/boot` (`apt-get install linux-image-amd64`), `/bin/busybox`
//! (`apt-get install busybox-static`), `cpio`, `gzip` and `readelf`, and says it skipped when
//! one is missing.

mod common;
mod kernel;

use std::process::Command;

use common::text;
use kernel::{DONE_LINE, USERSPACE_LINE, guest_args, guest_available, initramfs};

fn boots_to_userspace(protocol: &str) {
    boots_to_userspace_on("emu", protocol);
}

/// Boots on `accel` through entry `protocol`, and checks the run.
fn boots_to_userspace_on(accel: &str, protocol: &str) {
    let test = format!("linux_boots_to_userspace_on_{accel}_{protocol}");
    let Some(kernel) = guest_available(&test) else {
        return;
    };
    if accel == "kvm" && !common::kvm_usable(&test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path());
    let out = Command::new("timeout")
        .arg("1800")
        .arg(env!("CARGO_BIN_EXE_umbra"))
        .args(["run", "--boot-protocol", protocol])
        .args(guest_args(
            accel,
            &kernel,
            &initrd,
            "console=ttyS0 pci=off umbra.quick",
        ))
        .output()
        .expect("umbra starts");
    let serial = text(&out.stdout);
    eprintln!("{serial}{}", text(&out.stderr));
    assert!(
        serial.starts_with("[    0.000000] Linux version "),
        "{serial}"
    );
    // The MP table leads the kernel to the local APIC and the I/O APIC, and the PIT's
    // interrupt reaches it through the I/O APIC (no fallback to the 8259 through LINT0).
    for line in [
        "found SMP MP-table at [mem 0x0009fc00-0x0009fc0f]",
        "IOAPIC[0]: apic_id 1, version 32, address 0xfec00000",
        "APIC: Switch to symmetric I/O mode setup",
        "..TIMER: vector=0x30 apic1=0 pin1=2",
    ] {
        assert!(serial.contains(line), "{line} missing:\n{serial}");
    }
    assert!(!serial.contains("MP-BIOS bug"), "{serial}");
    assert!(serial.contains(USERSPACE_LINE), "{serial}");
    assert!(serial.contains(DONE_LINE), "{serial}");
    assert!(
        text(&out.stderr).contains(&format!("{accel}: halted with interrupts disabled")),
        "{}",
        text(&out.stderr)
    );
    assert!(out.status.success(), "{}", out.status);
}

#[test]
fn linux_boots_to_userspace_unpacked_by_umbra() {
    boots_to_userspace("vmlinux");
}

#[test]
fn linux_boots_to_userspace_through_the_64_bit_entry() {
    boots_to_userspace("64");
}

#[test]
fn linux_boots_to_userspace_through_the_32_bit_entry() {
    boots_to_userspace("32");
}

/// On KVM with Umbra's own interrupt controllers. Ignored by default: on a host whose KVM is
/// PVM, all guest kernel code runs in KVM's instruction emulator and the kernel was still in
/// its initcalls after 40 minutes; with hardware virtualization it takes seconds (`cargo test
/// --release -p umbra --test linux_boot -- --ignored`).
#[test]
#[ignore = "more than 40 minutes where KVM is PVM; run with --ignored on hardware KVM"]
fn linux_boots_to_userspace_on_kvm() {
    boots_to_userspace_on("kvm", "vmlinux");
}
