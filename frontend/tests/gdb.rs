//! A real gdb against `umbra run -S`: breakpoints in protected and long mode, control
//! registers, steps, a watchpoint, `monitor walk`, and the run to its end, on each backend; and
//! a client that interrupts the guest, drops the connection and comes back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{free_port, have_program, kvm_usable, run_gdb, start_umbra, text};
use umbra_cpu::backend::kvm::KvmFlavor;

/// The session of the README, on `accel`.
fn debug_the_demo(accel: &str) {
    let port = free_port();
    let (umbra, _) = start_umbra(&["--accel", accel, "-S"], port);
    // PVM's instruction emulator ignores the debug registers: gdb watches by stepping there.
    let pvm = accel == "kvm" && KvmFlavor::detect() == KvmFlavor::Pvm;
    let watch_mode = if pvm {
        "set can-use-hw-watchpoints 0"
    } else {
        "set can-use-hw-watchpoints 1"
    };
    let elf = umbra_firmware::find("demo").unwrap().elf;
    let transcript = run_gdb(
        port,
        Some(elf),
        300,
        &[
            "break *0xffff006d",
            "continue",
            "p/x $cr0",
            // long_mode_start: skip its first instruction (ESP already holds the value it
            // loads), plant a CR2, and step the next.
            "break *0xffff0130",
            "continue",
            "set $rip = 0xffff0135",
            "set $cr2 = 0xdeadL",
            "stepi",
            "p/x $pc",
            "p/x $cr2",
            "break image_main",
            "continue",
            "p/x $cr0",
            "p/x $cr3",
            "p/x $efer",
            "stepi",
            "stepi",
            // Into check_address_spaces, past its first instruction (a one-byte PUSH).
            "p/x $pc - (long)&check_address_spaces",
            watch_mode,
            "watch *(long *)&checks_run",
            "continue",
            "delete",
            "monitor walk 0x400000001000",
            "monitor help",
            "continue",
        ],
    );
    let output = umbra.wait_with_output().unwrap();
    let serial = text(&output.stdout);
    let expected = [
        "Breakpoint 1, protected_mode_start ()",
        "$1 = 0x60000011",
        "Breakpoint 2, long_mode_start ()",
        "$2 = 0xffff013c",
        "$3 = 0xdead",
        "Breakpoint 3, image_main ()",
        "$4 = 0xe0010011",
        "$5 = 0x6000",
        "$6 = 0xd00",
        "$7 = 0x1",
        "Old value = 0",
        "New value = 1",
        "PML4E[128]",
        "-> #PF, error code 0x0 (not present)",
        "walk ADDR [r|w|x] [user|kernel]",
        "[Inferior 1 (process 1) exited normally]",
    ];
    for line in expected {
        assert!(
            transcript.contains(line),
            "{accel}: no '{line}' in gdb's output:\n{transcript}\numbra: {}",
            text(&output.stderr)
        );
    }
    assert!(serial.contains("all 8 checks passed"), "{serial}");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn gdb_debugs_the_demo_on_the_emulator() {
    if have_program("gdb_debugs_the_demo_on_the_emulator", "gdb") {
        debug_the_demo("emu");
    }
}

#[test]
fn gdb_debugs_the_demo_on_kvm() {
    if have_program("gdb_debugs_the_demo_on_kvm", "gdb") && kvm_usable("gdb_debugs_the_demo_on_kvm")
    {
        debug_the_demo("kvm");
    }
}

/// A remote-protocol packet.
fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

/// Reads up to the next whole packet from the stub and returns its body, skipping acks.
fn read_packet(stream: &mut TcpStream) -> String {
    let mut body = Vec::new();
    let mut byte = [0u8];
    let mut inside = false;
    loop {
        stream.read_exact(&mut byte).expect("a reply");
        match (inside, byte[0]) {
            (false, b'$') => inside = true,
            (false, _) => {}
            (true, b'#') => {
                let mut checksum = [0u8; 2];
                stream.read_exact(&mut checksum).unwrap();
                stream.write_all(b"+").unwrap();
                return String::from_utf8_lossy(&body).into_owned();
            }
            (true, b) => body.push(b),
        }
    }
}

fn request(stream: &mut TcpStream, body: &str) -> String {
    stream.write_all(&packet(body)).unwrap();
    read_packet(stream)
}

#[test]
fn a_client_interrupts_leaves_and_another_attaches() {
    // bench-compute runs for seconds on the interpreter (a fraction of one on the JIT): long
    // enough to interrupt.
    let port = free_port();
    let (mut umbra, _) = start_umbra(
        &[
            "--accel",
            "emu",
            "--jit",
            "off",
            "--firmware",
            "bench-compute",
            "-S",
        ],
        port,
    );
    let connect = || {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
    };
    let mut first = connect();
    assert!(request(&mut first, "?").starts_with('T'));
    first.write_all(&packet("vCont;c")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    first.write_all(&[0x03]).unwrap();
    let stop = read_packet(&mut first);
    assert!(stop.starts_with("T02"), "interrupt gave {stop}");
    // Memory reads past guest RAM fail cleanly.
    assert!(request(&mut first, "m7fffffffff000,10").starts_with('E'));
    let rip = request(&mut first, "g");
    drop(first);

    // The guest stays stopped until the next client lets it go.
    std::thread::sleep(Duration::from_millis(200));
    let mut second = connect();
    assert!(request(&mut second, "?").starts_with('T'));
    assert_eq!(
        request(&mut second, "g"),
        rip,
        "the guest ran while no one held it"
    );
    assert!(request(&mut second, "qRcmd,6d656d736c6f7473").starts_with('O'));
    second.write_all(&packet("D")).unwrap();
    let _ = read_packet(&mut second);

    // Detached, the guest runs to its end.
    let status = umbra.wait().unwrap();
    let mut serial = String::new();
    umbra
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut serial)
        .unwrap();
    assert!(serial.contains("sieve"), "{serial}");
    assert_eq!(status.code(), Some(0));
}
