//! A real gdb against Debian's kernel on the emulator, as a kernel developer starts a session:
//! `umbra run -kernel ... -S` with `nokaslr`, a hardware breakpoint at `start_kernel`, `$cr3`
//! read there, and the guest continued to the line its `/init` prints from userspace and on to
//! the end of the run. The kernel ships without a usable System.map, so `start_kernel`'s
//! address comes from the kernel's own kallsyms tables (`kernel::kallsyms`). The JIT keeps
//! running while the breakpoint is set (a block at a time, none holding it), so the session
//! takes seconds.
//!
//! Besides what `linux_boot` needs it needs `gdb`, and says it skipped when it is missing.

mod common;
mod kernel;

use common::{free_port, have_program, run_gdb, start_umbra, text};
use kernel::{DONE_LINE, USERSPACE_LINE, guest_args, guest_available, initramfs};

#[test]
fn gdb_stops_linux_at_start_kernel_and_lets_it_reach_userspace() {
    let test = "gdb_stops_linux_at_start_kernel_and_lets_it_reach_userspace";
    let Some(kernel) = guest_available(test) else {
        return;
    };
    if !have_program(test, "gdb") {
        return;
    }
    let image = std::fs::read(&kernel).unwrap();
    let start_kernel = kernel::kallsyms::symbol_address(&image, "start_kernel")
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.display()));
    eprintln!("{}: start_kernel at {start_kernel:#x}", kernel.display());

    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path());
    let port = free_port();
    let mut args = guest_args(
        "emu",
        &kernel,
        &initrd,
        "console=ttyS0 pci=off nokaslr umbra.quick",
    );
    args.push("-S".into());
    let (umbra, _) = start_umbra(&args, port);
    let transcript = run_gdb(
        port,
        None,
        1800,
        &[
            &format!("hbreak *{start_kernel:#x}"),
            "continue",
            "p/x $pc",
            "p/x $cr3",
            "delete",
            "continue",
        ],
    );
    let output = umbra.wait_with_output().unwrap();
    let serial = text(&output.stdout);
    eprintln!("{transcript}\n{serial}{}", text(&output.stderr));

    assert!(
        transcript.contains(&format!(
            "Hardware assisted breakpoint 1 at {start_kernel:#x}"
        )),
        "{transcript}"
    );
    assert!(
        transcript.contains(&format!("$1 = {start_kernel:#x}")),
        "{transcript}"
    );
    // CR3 at start_kernel: the kernel's early page tables, a page-aligned physical address in
    // the kernel's image, nowhere near the 4 GiB identity map Umbra's 64-bit entry set up.
    let cr3 = transcript
        .lines()
        .find_map(|line| line.strip_prefix("$2 = 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no $cr3 in {transcript}"));
    assert!(
        cr3 != 0 && cr3 % 4096 == 0 && cr3 < 512 << 20,
        "cr3 {cr3:#x}"
    );
    assert!(
        transcript.contains("[Inferior 1 (process 1) exited normally]"),
        "{transcript}"
    );
    let banner = serial.find("Linux version").expect("the kernel's banner");
    let userspace = serial.find(USERSPACE_LINE).expect("the init marker");
    assert!(banner < userspace, "{serial}");
    assert!(serial.contains(DONE_LINE), "{serial}");
}
