//! The `multiboot-test` kernel booted with `umbra run --kernel` on the emulator and on KVM,
//! and with `qemu-system-x86_64 -kernel`, with two modules: the same lines everywhere (its
//! boot information and modules, fw_cfg's values, and checks of its memory map against them)
//! and status 0.

mod common;

use std::path::Path;
use std::process::Command;

use common::{have_program, kvm_usable, run_umbra, text};

/// The kernel command line the tests pass.
const APPEND: &str = "a=1 b=two";

/// The modules' contents.
fn module_contents() -> [Vec<u8>; 2] {
    [
        b"module one\n".to_vec(),
        (0..3000u32).map(|n| (n % 251) as u8).collect(),
    ]
}

/// Writes the two modules into `dir`; returns `--initrd`'s value, the first with arguments.
fn modules(dir: &Path) -> String {
    let paths: Vec<String> = module_contents()
        .iter()
        .enumerate()
        .map(|(n, contents)| {
            let path = dir.join(format!("module{n}"));
            std::fs::write(&path, contents).unwrap();
            path.to_str().unwrap().to_owned()
        })
        .collect();
    format!("{} arg=1,{}", paths[0], paths[1])
}

/// What the kernel prints, given `kernel`'s path and `--initrd`'s value, wherever it runs.
fn expected(kernel: &str, initrd: &str) -> String {
    let module_lines: String = initrd
        .split(',')
        .zip(module_contents())
        .map(|(cmdline, contents)| {
            let sum: u32 = contents.iter().map(|&b| u32::from(b)).sum();
            format!(
                "multiboot-test: module: {cmdline}, {} bytes, byte sum {sum}\n",
                contents.len()
            )
        })
        .collect();
    format!(
        "\
multiboot-test: entered in 32-bit protected mode
check EAX holds the boot loader's magic ok
check the information has memory sizes, a command line and a memory map ok
multiboot-test: command line: {kernel} {APPEND}
multiboot-test: modules: 2
{module_lines}multiboot-test: fw_cfg signature: QEMU
multiboot-test: fw_cfg CPUs: 1
multiboot-test: fw_cfg RAM size: 128 MiB
check mem_lower is 600 to 640 KiB ok
check mem_upper ends within the last MiB of fw_cfg's RAM size ok
check the memory map has RAM from 0 to 636 KiB or more ok
check the memory map has RAM from 1 MiB to within the last MiB of RAM ok
multiboot-test: failed checks: 0
"
    )
}

fn boots_on_umbra(accel: &str) {
    let kernel = umbra_firmware::kernels::multiboot_test();
    let dir = tempfile::tempdir().unwrap();
    let initrd = modules(dir.path());
    let out = run_umbra(&[
        "run", "--accel", accel, "-kernel", kernel, "-append", APPEND, "-initrd", &initrd,
    ]);
    assert_eq!(
        text(&out.stdout),
        expected(kernel, &initrd),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn multiboot_test_on_the_emulator() {
    boots_on_umbra("emu");
}

#[test]
fn multiboot_test_on_kvm() {
    if kvm_usable("multiboot_test_on_kvm") {
        boots_on_umbra("kvm");
    }
}

#[test]
fn multiboot_test_on_qemu() {
    if !have_program("multiboot_test_on_qemu", "qemu-system-x86_64") {
        return;
    }
    let kernel = umbra_firmware::kernels::multiboot_test();
    let dir = tempfile::tempdir().unwrap();
    let initrd = modules(dir.path());
    let out = Command::new("timeout")
        .args(["120", "qemu-system-x86_64", "-accel", "tcg", "-m", "128M"])
        .args(["-kernel", kernel, "-append", APPEND, "-initrd", &initrd])
        .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .output()
        .expect("qemu starts");
    assert_eq!(
        text(&out.stdout),
        expected(kernel, &initrd),
        "{}",
        text(&out.stderr)
    );
    // QEMU exits with (status << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}
