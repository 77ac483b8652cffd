//! The gdbstub: debug a guest with gdb as under QEMU (`-s`, `-S`, `--gdb`), on either backend,
//! with the MMU in view (`monitor help`).
//!
//! - [`control`]: where the vCPU loop and the debugger meet (stop, resume, calls on the vCPU).
//! - [`session`]: one client's connection, gdbstub's state machine and QEMU's extra packet.
//! - [`target`]: the machine as gdbstub's target (registers, memory, breakpoints).
//! - [`arch`]: the register file and its target description.
//! - [`monitor`]: the monitor commands.
//!
//! The server listens on one address and serves one client at a time; when a client goes,
//! the next may attach. Attaching stops the guest, as QEMU does.
//!
//! What each backend does:
//!
//! | | emu | kvm (hardware) | kvm on PVM |
//! |---|---|---|---|
//! | breakpoints | any number, checked before each instruction | 4 debug registers | any number, by single-stepping (slow) |
//! | watchpoints | any number and size, on every data access | debug registers (1, 2, 4, 8 bytes; no read-only) | refused: `set can-use-hw-watchpoints 0` |
//! | MMU commands | roles, roots, TLB, counters | KVM's binary statistics | KVM's binary statistics |

pub mod arch;
pub mod control;
pub mod monitor;
pub mod session;
pub mod target;

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use control::DebugControl;
use session::Socket;
use target::MachineView;

/// The port of QEMU's `-s`.
pub const DEFAULT_PORT: u16 = 1234;

/// Where the gdb server listens: QEMU's `-gdb` forms `tcp:HOST:PORT` (an empty host is
/// loopback, not every interface) and `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GdbAddress {
    /// A TCP host and port.
    Tcp {
        /// The host name or address.
        host: String,
        /// The port.
        port: u16,
    },
    /// A Unix-domain socket, created (and replaced if it exists).
    Unix(PathBuf),
}

impl GdbAddress {
    /// `tcp:127.0.0.1:1234`, what `-s` means.
    pub fn default_tcp() -> GdbAddress {
        GdbAddress::Tcp {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_PORT,
        }
    }
}

impl FromStr for GdbAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected 'tcp:HOST:PORT', 'tcp::PORT' or 'unix:PATH'";
        match text.split_once(':') {
            Some(("tcp", rest)) => {
                let (host, port) = rest.rsplit_once(':').ok_or(EXPECTED)?;
                let port = port.parse().map_err(|_| EXPECTED.to_owned())?;
                let host = match host.trim_start_matches('[').trim_end_matches(']') {
                    "" => "127.0.0.1",
                    host => host,
                };
                Ok(GdbAddress::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            Some(("unix", path)) if !path.is_empty() => Ok(GdbAddress::Unix(path.into())),
            _ => Err(EXPECTED.to_owned()),
        }
    }
}

impl fmt::Display for GdbAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GdbAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            GdbAddress::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            GdbAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A listening socket.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn bind(address: &GdbAddress) -> io::Result<Listener> {
        Ok(match address {
            GdbAddress::Tcp { host, port } => {
                Listener::Tcp(TcpListener::bind((host.as_str(), *port))?)
            }
            GdbAddress::Unix(path) => {
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                Listener::Unix(UnixListener::bind(path)?)
            }
        })
    }

    fn accept(&self) -> io::Result<Socket> {
        Ok(match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                stream.set_nodelay(true)?;
                Socket::Tcp(stream)
            }
            Listener::Unix(listener) => Socket::Unix(listener.accept()?.0),
        })
    }
}

/// Listens on `address` and serves gdb clients one after another on a thread of their own,
/// for as long as the process lives. Binding happens before this returns, so a port in use
/// is an error here.
pub fn serve(
    address: &GdbAddress,
    control: Arc<DebugControl>,
    view: MachineView,
) -> io::Result<()> {
    let listener = Listener::bind(address)?;
    std::thread::Builder::new()
        .name("gdb".to_owned())
        .spawn(move || {
            loop {
                let socket = match listener.accept() {
                    Ok(socket) => socket,
                    Err(error) => {
                        eprintln!("umbra: gdb: accept failed: {error}");
                        continue;
                    }
                };
                if let Err(error) = session::serve(socket, &control, &view) {
                    eprintln!("umbra: gdb: session failed: {error}");
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_qemus_forms() {
        assert_eq!("tcp::1234".parse(), Ok(GdbAddress::default_tcp()));
        assert_eq!(
            "tcp:0.0.0.0:2345".parse(),
            Ok(GdbAddress::Tcp {
                host: "0.0.0.0".to_owned(),
                port: 2345
            })
        );
        assert_eq!(
            "tcp:[::1]:1234".parse::<GdbAddress>().unwrap().to_string(),
            "tcp:[::1]:1234"
        );
        assert_eq!(
            "unix:/tmp/gdb.sock".parse(),
            Ok(GdbAddress::Unix("/tmp/gdb.sock".into()))
        );
        for bad in ["tcp:1234", "tcp::99999", "unix:", "1234", "udp::1234"] {
            assert!(bad.parse::<GdbAddress>().is_err(), "{bad}");
        }
    }
}
