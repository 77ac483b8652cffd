//! Bad input on the command line gets one clear line and exit status 2, never a panic.

mod common;

use common::{run_umbra, text};

/// Asserts that `args` fail with status 2 and one line on stderr that mentions `needle`.
fn refused(args: &[&str], needle: &str) {
    let out = run_umbra(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("umbra: "), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

#[test]
fn unknown_flags_and_commands_are_refused() {
    refused(&["run", "--frobnicate"], "--frobnicate");
    refused(&["launch"], "launch");
    refused(&["run", "--accel", "tcg"], "tcg");
}

#[test]
fn impossible_memory_sizes_are_refused() {
    refused(&["run", "-m", "0"], "below the 1M minimum");
    refused(&["run", "--memory", "0M"], "below the 1M minimum");
    refused(&["run", "-m", "64T"], "above the 1T maximum");
    refused(&["run", "-m", "lots"], "not a number");
}

#[test]
fn missing_and_malformed_firmware_images_are_refused() {
    refused(
        &["run", "--firmware", "/nonexistent/rom.bin"],
        "no such file",
    );
    refused(
        &["run", "--firmware", "no-such-builtin"],
        "umbra firmware list",
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, size) in [
        ("empty.rom", 0),
        ("truncated.rom", 65535),
        ("huge.rom", 17 << 20),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![0xf4; size]).unwrap();
        refused(
            &["run", "--firmware", path.to_str().unwrap()],
            "multiple of 64 KiB",
        );
    }
    refused(
        &["run", "--firmware", dir.path().to_str().unwrap()],
        "cannot read",
    );
}

#[test]
fn serial_targets_are_checked() {
    refused(&["run", "--serial", "tcp:1234"], "file:PATH");
    refused(
        &["run", "--serial", "file:/nonexistent/dir/out.txt"],
        "serial output file",
    );
}

#[test]
fn firmware_list_names_the_demo() {
    let out = run_umbra(&["firmware", "list"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout)
            .lines()
            .any(|line| line.starts_with("demo "))
    );
}

#[test]
fn no_arguments_show_the_help_and_fail() {
    let out = run_umbra(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage: umbra <COMMAND>"));
}

#[test]
fn help_is_not_an_error() {
    let out = run_umbra(&["run", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--memory <SIZE>"));
}

#[test]
fn bad_kernels_and_initrds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    refused(&["run", "--kernel", &path("missing")], "cannot read kernel");
    std::fs::write(path("text"), "not a kernel\n".repeat(1000)).unwrap();
    refused(
        &["run", "-kernel", &path("text")],
        "neither a Linux bzImage nor a multiboot kernel",
    );
    // The first 4 KiB of a bzImage whose header describes 1 MiB of kernel.
    let mut truncated = vec![0u8; 4096];
    truncated[0x1f1] = 1;
    truncated[0x1f4..0x1f8].copy_from_slice(&(1u32 << 16).to_le_bytes());
    truncated[0x202..0x206].copy_from_slice(b"HdrS");
    truncated[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    std::fs::write(path("truncated"), &truncated).unwrap();
    refused(&["run", "-kernel", &path("truncated")], "truncated bzImage");
    // A multiboot header whose load addresses go past the end of the file.
    let magic = 0x1bad_b002u32;
    let flags = 1u32 << 16;
    let words = [
        magic,
        flags,
        0u32.wrapping_sub(magic + flags),
        0x10_0000,
        0x10_0000,
        0x20_0000,
        0,
        0x10_0000,
    ];
    let multiboot: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write(path("multiboot"), &multiboot).unwrap();
    refused(
        &["run", "-kernel", &path("multiboot")],
        "bad multiboot header",
    );

    truncated.resize(2 * 512 + (1 << 20), 0);
    std::fs::write(path("bzimage"), &truncated).unwrap();
    refused(
        &[
            "run",
            "-kernel",
            &path("bzimage"),
            "-initrd",
            &path("missing"),
        ],
        "cannot read initrd",
    );
    refused(&["run", "--initrd", &path("bzimage")], "--kernel");
    refused(
        &["run", "--kernel", &path("bzimage"), "--firmware", "demo"],
        "cannot be used with",
    );
}
