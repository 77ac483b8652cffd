//! One gdb client, from connect to disconnect.
//!
//! A reader thread turns the socket into [`SessionEvent::Data`]; the vCPU adds
//! [`SessionEvent::Stopped`] to the same channel; the session thread feeds the bytes to
//! gdbstub's state machine and reports stops, so it waits on one channel whether the guest
//! runs or not. Bytes pass [`QemuPackets`] first, which answers QEMU's
//! `Qqemu.PhyMemMode` packet (gdbstub has no hook for packets it does not know).
//!
//! A client that misbehaves (a malformed or oversized packet gdbstub cannot parse) loses its
//! connection; the guest is left as it was, and the next client can attach.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::breakpoints::WatchKind as GdbWatchKind;
use umbra_cpu::debug::WatchKind;

use super::control::{DebugControl, SessionEvent, Stop};
use super::target::{MachineView, UmbraTarget, VCPU_THREAD};

/// A client's socket.
pub enum Socket {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain connection.
    Unix(UnixStream),
}

impl Socket {
    fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => Write::write(s, buf),
            Socket::Unix(s) => Write::write(s, buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => Write::flush(s),
            Socket::Unix(s) => Write::flush(s),
        }
    }
}

/// gdbstub's side of the socket: what it writes, buffered until it flushes a packet.
pub struct Outgoing<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> Outgoing<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        Outgoing {
            out: io::BufWriter::new(out),
        }
    }
}

impl<W: Write> Connection for Outgoing<W> {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.out.write_all(&[byte])
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The payload of QEMU's physical-memory-mode packet, before its `0` or `1`.
const PHY_MEM_MODE: &[u8] = b"Qqemu.PhyMemMode:";
/// The reply to it (with the acknowledgement gdb waits for outside no-ack mode, which it
/// skips over in no-ack mode).
const PHY_MEM_MODE_REPLY: &[u8] = b"+$OK#9a";

/// Picks `$Qqemu.PhyMemMode:N#cs` out of the client's bytes; everything else passes on
/// untouched. It holds at most one short packet's prefix, so hostile input cannot make it
/// grow.
#[derive(Debug, Default)]
pub struct QemuPackets {
    /// A packet being looked at: from its `$`, while it still may be the one.
    held: Vec<u8>,
    /// Checksum characters seen after `#`, when `held` ended in one.
    checksum_chars: usize,
}

impl QemuPackets {
    /// Takes one byte from the client. Bytes for gdbstub go to `forward`; a complete
    /// physical-memory-mode packet returns the mode it asks for.
    pub fn push(&mut self, byte: u8, forward: &mut Vec<u8>) -> Option<bool> {
        if self.held.is_empty() {
            if byte == b'$' {
                self.held.push(byte);
            } else {
                forward.push(byte);
            }
            return None;
        }
        self.held.push(byte);
        if self.checksum_chars > 0 || byte == b'#' {
            self.checksum_chars += 1;
            if self.checksum_chars < 3 {
                return None;
            }
            let mode = self.complete_packet();
            if mode.is_none() {
                forward.append(&mut self.held);
            }
            self.held.clear();
            self.checksum_chars = 0;
            return mode;
        }
        let payload = &self.held[1..];
        let still_possible = if payload.len() <= PHY_MEM_MODE.len() {
            PHY_MEM_MODE.starts_with(payload)
        } else {
            payload.len() == PHY_MEM_MODE.len() + 1 && matches!(byte, b'0' | b'1')
        };
        if !still_possible {
            forward.append(&mut self.held);
        }
        None
    }

    /// The mode a held `$...#cs` asks for, if it is the packet with a right checksum.
    fn complete_packet(&self) -> Option<bool> {
        let (body, checksum) = self.held[1..].split_at(self.held.len() - 4);
        let mode = body.strip_prefix(PHY_MEM_MODE)?;
        let sum = body.iter().fold(0u8, |sum, b| sum.wrapping_add(*b));
        let given = std::str::from_utf8(&checksum[1..])
            .ok()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())?;
        match (mode, given == sum) {
            (b"0", true) => Some(false),
            (b"1", true) => Some(true),
            _ => None,
        }
    }
}

/// What the client sent, in order: bytes for gdbstub, and QEMU's packet answered here, which
/// must be answered after the packets before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    Byte(u8),
    PhysicalMemory(bool),
}

/// How a session ended.
enum End {
    /// gdb detached: the guest runs on.
    Detach,
    /// gdb killed the guest.
    Kill,
    /// The machine's run ended and the client was told.
    RunEnded,
    /// The connection dropped or the client broke the protocol.
    Dropped,
}

/// Serves one client until it goes; the vCPU is stopped while it attaches and left as the
/// client leaves it.
pub fn serve(socket: Socket, control: &Arc<DebugControl>, view: &MachineView) -> io::Result<()> {
    let (events, inbox) = mpsc::channel();
    spawn_reader(socket.try_clone()?, events.clone());
    if control.attach(events).is_err() {
        socket.shutdown();
        return Ok(());
    }
    let end = run_protocol(&socket, control, view, &inbox);
    socket.shutdown();
    match end {
        End::Detach => control.detach(true),
        End::Kill => {
            control.detach(false);
            control.kill();
        }
        End::Dropped => control.detach(false),
        End::RunEnded => {}
    }
    Ok(())
}

/// Forwards what the client sends, until it closes.
fn spawn_reader(mut socket: Socket, events: Sender<SessionEvent>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if events.send(SessionEvent::Data(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = events.send(SessionEvent::Closed);
    });
}

/// The protocol loop: gdbstub's state machine fed from `inbox`.
fn run_protocol(
    socket: &Socket,
    control: &Arc<DebugControl>,
    view: &MachineView,
    inbox: &Receiver<SessionEvent>,
) -> End {
    let (Ok(out), Ok(mut direct)) = (socket.try_clone(), socket.try_clone()) else {
        return End::Dropped;
    };
    let mut target = UmbraTarget::new(control.clone(), view.clone());
    let Ok(mut gdb) = GdbStub::new(Outgoing::new(out)).run_state_machine(&mut target) else {
        return End::Dropped;
    };
    let mut qemu = QemuPackets::default();
    let mut pending: VecDeque<Input> = VecDeque::new();
    loop {
        let next = match gdb {
            GdbStubStateMachine::Disconnected(gdb) => {
                return match gdb.get_reason() {
                    DisconnectReason::Disconnect => End::Detach,
                    DisconnectReason::Kill => End::Kill,
                    DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_) => {
                        control.end_reported();
                        End::RunEnded
                    }
                };
            }
            GdbStubStateMachine::CtrlCInterrupt(gdb) => {
                control.interrupt();
                gdb.interrupt_handled(&mut target, None::<MultiThreadStopReason<u64>>)
            }
            GdbStubStateMachine::Idle(gdb) => match pending.pop_front() {
                Some(Input::Byte(byte)) => gdb.incoming_data(&mut target, byte),
                Some(Input::PhysicalMemory(on)) => {
                    if !answer_physical_memory(on, &mut target, &mut direct) {
                        return End::Dropped;
                    }
                    Ok(gdb.into())
                }
                None => match inbox.recv() {
                    Ok(SessionEvent::Data(bytes)) => {
                        take_bytes(&bytes, &mut qemu, &mut pending);
                        Ok(gdb.into())
                    }
                    Ok(SessionEvent::Stopped(Stop::Exited(_) | Stop::Terminated)) => {
                        // The run ended while the client waited for nothing (a kill).
                        control.end_reported();
                        return End::RunEnded;
                    }
                    // A stop that raced with the client's own stop request.
                    Ok(SessionEvent::Stopped(_)) => Ok(gdb.into()),
                    Ok(SessionEvent::Closed) | Err(_) => return End::Dropped,
                },
            },
            GdbStubStateMachine::Running(gdb) => match pending.pop_front() {
                Some(Input::Byte(byte)) => gdb.incoming_data(&mut target, byte),
                Some(Input::PhysicalMemory(on)) => {
                    if !answer_physical_memory(on, &mut target, &mut direct) {
                        return End::Dropped;
                    }
                    Ok(gdb.into())
                }
                None => match inbox.recv() {
                    Ok(SessionEvent::Data(bytes)) => {
                        take_bytes(&bytes, &mut qemu, &mut pending);
                        Ok(gdb.into())
                    }
                    Ok(SessionEvent::Stopped(stop)) => {
                        let reason = stop_reason(stop, &target);
                        gdb.report_stop(&mut target, reason)
                    }
                    Ok(SessionEvent::Closed) | Err(_) => return End::Dropped,
                },
            },
        };
        gdb = match next {
            Ok(gdb) => gdb,
            Err(error) => {
                eprintln!("umbra: gdb: closing the connection: {error}");
                return End::Dropped;
            }
        };
    }
}

/// Switches physical-memory mode and says OK; `false` if the client is gone.
fn answer_physical_memory(on: bool, target: &mut UmbraTarget, direct: &mut Socket) -> bool {
    target.physical_memory = on;
    direct.write_all(PHY_MEM_MODE_REPLY).is_ok()
}

/// Passes the client's bytes through [`QemuPackets`] into `pending`.
fn take_bytes(bytes: &[u8], qemu: &mut QemuPackets, pending: &mut VecDeque<Input>) {
    let mut forward = Vec::with_capacity(bytes.len());
    for &byte in bytes {
        if let Some(physical) = qemu.push(byte, &mut forward) {
            pending.extend(forward.drain(..).map(Input::Byte));
            pending.push_back(Input::PhysicalMemory(physical));
        }
    }
    pending.extend(forward.into_iter().map(Input::Byte));
}

/// A stop in gdbstub's terms.
fn stop_reason(stop: Stop, target: &UmbraTarget) -> MultiThreadStopReason<u64> {
    match stop {
        Stop::Interrupted => MultiThreadStopReason::SignalWithThread {
            tid: VCPU_THREAD,
            signal: Signal::SIGINT,
        },
        Stop::Stepped => MultiThreadStopReason::DoneStep,
        Stop::Breakpoint(linear) if target.is_sw_breakpoint(linear) => {
            MultiThreadStopReason::SwBreak(VCPU_THREAD)
        }
        Stop::Breakpoint(_) => MultiThreadStopReason::HwBreak(VCPU_THREAD),
        Stop::Watchpoint(watchpoint) => MultiThreadStopReason::Watch {
            tid: VCPU_THREAD,
            kind: match watchpoint.kind {
                WatchKind::Write => GdbWatchKind::Write,
                WatchKind::Read => GdbWatchKind::Read,
                WatchKind::Access => GdbWatchKind::ReadWrite,
            },
            addr: watchpoint.linear,
        },
        Stop::Exited(status) => MultiThreadStopReason::Exited(status),
        Stop::Terminated => MultiThreadStopReason::Terminated(Signal::SIGSEGV),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
        format!("${body}#{sum:02x}").into_bytes()
    }

    fn feed(bytes: &[u8]) -> (Vec<u8>, Vec<bool>) {
        let mut qemu = QemuPackets::default();
        let mut forward = Vec::new();
        let modes = bytes
            .iter()
            .filter_map(|&b| qemu.push(b, &mut forward))
            .collect();
        (forward, modes)
    }

    #[test]
    fn the_physical_memory_packet_is_answered_and_others_pass() {
        let mut stream = packet("qSupported:xmlRegisters=i386");
        stream.extend(b"+");
        stream.extend(packet("Qqemu.PhyMemMode:1"));
        stream.extend(packet("m1000,4"));
        stream.extend(packet("Qqemu.PhyMemMode:0"));
        let (forward, modes) = feed(&stream);
        assert_eq!(modes, [true, false]);
        let mut expected = packet("qSupported:xmlRegisters=i386");
        expected.extend(b"+");
        expected.extend(packet("m1000,4"));
        assert_eq!(forward, expected);
    }

    #[test]
    fn near_misses_pass_to_gdbstub() {
        for body in [
            "Qqemu.PhyMemMode:2",
            "Qqemu.PhyMemMode:11",
            "Qqemu.Phy",
            "Qqemu",
        ] {
            let (forward, modes) = feed(&packet(body));
            assert!(modes.is_empty(), "{body}");
            assert_eq!(forward, packet(body), "{body}");
        }
        let mut bad_sum = packet("Qqemu.PhyMemMode:1");
        let last = bad_sum.len() - 1;
        bad_sum[last] = b'0';
        let (forward, modes) = feed(&bad_sum);
        assert!(modes.is_empty());
        assert_eq!(forward, bad_sum);
    }
}
