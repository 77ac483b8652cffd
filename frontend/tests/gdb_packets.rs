//! The gdb packet path under garbage, truncated and hostile input: a session fed random
//! streams of well-formed, malformed and cut-off packets must answer or close the connection,
//! never panic, hang, or let the machine fail; and a machine whose client misbehaved still
//! ends when asked.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use umbra::gdb::control::DebugControl;
use umbra::gdb::session::{Socket, serve};
use umbra::gdb::target::MachineView;
use umbra::machine::{Machine, MachineConfig, RunOutcome};
use umbra_cpu::backend::BackendError;
use umbra_cpu::backend::emu::EmuHypervisor;

/// How long a session or a machine may take to end before the test calls it a hang.
const HANG: Duration = Duration::from_secs(30);

/// A demo machine on the emulator, held before its first instruction, running on a thread.
fn held_machine() -> (
    Arc<DebugControl>,
    MachineView,
    mpsc::Receiver<Result<RunOutcome, BackendError>>,
) {
    let rom = umbra_firmware::find("demo").unwrap().rom;
    let config = MachineConfig {
        memory: "16M".parse().unwrap(),
        rom,
        serial: Box::new(std::io::sink()),
    };
    let mut machine = Machine::new(&EmuHypervisor, config).unwrap();
    let control = machine.debug_control(true);
    let view = MachineView {
        memslots: machine.memslots().clone(),
        vm: machine.vm().clone(),
        backend: "emu",
    };
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(machine.run());
    });
    (control, view, outcome)
}

/// A packet with a right checksum.
fn packet(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    let mut bytes = vec![b'$'];
    bytes.extend_from_slice(body);
    bytes.extend(format!("#{sum:02x}").into_bytes());
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bodies of packets gdbstub and Umbra answer, with hostile arguments.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let monitor = prop_oneof![
        Just("help".to_owned()),
        Just("mmu".to_owned()),
        Just("tlb".to_owned()),
        Just("stats".to_owned()),
        Just("memslots".to_owned()),
        any::<u64>().prop_map(|a| format!("walk {a:#x} w user")),
        any::<u16>().prop_map(|s| format!("dirty {s}")),
        any::<u16>().prop_map(|s| format!("dirty {s} on")),
        Just("phys on".to_owned()),
        "[ -~]{0,40}",
    ];
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(a, n)| format!("m{a:x},{n:x}").into_bytes()),
        (
            any::<u64>(),
            0u64..0x2000,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(a, n, d)| format!("M{a:x},{n:x}:{}", hex(&d)).into_bytes()),
        (0u32..5, any::<u64>(), any::<u64>())
            .prop_map(|(k, a, n)| format!("Z{k},{a:x},{n:x}").into_bytes()),
        (0u32..5, any::<u64>(), any::<u64>())
            .prop_map(|(k, a, n)| format!("z{k},{a:x},{n:x}").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..700)
            .prop_map(|d| format!("G{}", hex(&d)).into_bytes()),
        (any::<u64>(), any::<u64>()).prop_map(|(o, n)| {
            format!("qXfer:features:read:target.xml:{o:x},{n:x}").into_bytes()
        }),
        monitor.prop_map(|c| format!("qRcmd,{}", hex(c.as_bytes())).into_bytes()),
        (0u8..3).prop_map(|m| format!("Qqemu.PhyMemMode:{m}").into_bytes()),
        prop_oneof![
            Just("g"),
            Just("?"),
            Just("s"),
            Just("vCont;s:1"),
            Just("vCont?"),
            Just("Hg1"),
            Just("Hc-1"),
            Just("qfThreadInfo"),
            Just("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386"),
            Just("QStartNoAckMode"),
            Just("p10"),
            Just("P10=0000000000000000"),
            Just("T1"),
        ]
        .prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

/// A stretch of what a client might send.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => hostile_body().prop_map(|b| packet(&b)),
        1 => (hostile_body(), any::<prop::sample::Index>()).prop_map(|(b, cut)| {
            let whole = packet(&b);
            whole[..cut.index(whole.len())].to_vec()
        }),
        1 => hostile_body().prop_map(|b| {
            let mut bad = packet(&b);
            let last = bad.len() - 1;
            bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
            bad
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => Just(vec![0x03]),
        1 => Just(b"+".to_vec()),
    ]
}

/// Reads what the stub sends until it closes the connection.
fn read_all(mut client: UnixStream) -> String {
    let mut replies = Vec::new();
    let _ = client.read_to_end(&mut replies);
    String::from_utf8_lossy(&replies).into_owned()
}

#[test]
fn a_well_behaved_client_gets_answers() {
    let (control, view, outcome) = held_machine();
    let (mut client, stub) = UnixStream::pair().unwrap();
    let session_control = control.clone();
    let session = std::thread::spawn(move || serve(Socket::Unix(stub), &session_control, &view));
    for body in [
        &b"?"[..],
        b"g",
        b"m0,4",
        b"Qqemu.PhyMemMode:1",
        b"mfffffff0,2",
        b"qRcmd,6d6d75",
    ] {
        client.write_all(&packet(body)).unwrap();
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let replies = read_all(client);
    session.join().unwrap().unwrap();
    // In order: the stop at reset, RIP 0xfff0 in the registers (run-length encoded), the
    // first bytes of RAM, QEMU's packet, the reset vector's near jump (0xe9) read physically,
    // and the monitor's console output.
    let mut from = 0;
    for reply in ["$T05", "f0ff", "$00", "+$OK#9a", "$e9", "$O"] {
        let at = replies[from..].find(reply);
        assert!(at.is_some(), "no {reply} after {from} in {replies}");
        from += at.unwrap() + reply.len();
    }
    control.kill();
    assert!(matches!(outcome.recv_timeout(HANG), Ok(Ok(_))));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_clients_get_answers_or_a_closed_connection(
        chunks in proptest::collection::vec(chunk(), 1..12)
    ) {
        let (control, view, outcome) = held_machine();
        let (client, stub) = UnixStream::pair().unwrap();
        let (served, session) = mpsc::channel();
        let session_control = control.clone();
        std::thread::spawn(move || {
            let _ = served.send(serve(Socket::Unix(stub), &session_control, &view).is_ok());
        });
        let mut drain = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sink = [0u8; 4096];
            while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
        });
        let mut writer = client.try_clone().unwrap();
        for chunk in &chunks {
            if writer.write_all(chunk).is_err() {
                break; // the stub closed the connection
            }
        }
        // Half-closed: the stub still answers what it read, then sees the end.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        prop_assert_eq!(session.recv_timeout(HANG), Ok(true), "the session hung or failed");
        control.kill();
        let ended = outcome.recv_timeout(HANG);
        prop_assert!(matches!(ended, Ok(Ok(_))), "the machine hung or failed: {:?}", ended);
    }
}
