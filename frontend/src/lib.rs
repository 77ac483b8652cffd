//! The `umbra` command: its command line, the machine it assembles, and how a run is reported.
//!
//! - [`cli`]: the command line.
//! - [`accel`]: choosing the backend for `--accel`.
//! - [`rom`]: firmware images, built in or from a file.
//! - [`loader`]: kernels booted without firmware (Linux bzImage, multiboot).
//! - [`memory_size`]: QEMU-style memory sizes.
//! - [`memory_map`]: the PC memory map in memslots.
//! - [`machine`]: the machine and its run loop.
//! - [`platform`]: the PC's devices around the vCPU.
//! - [`console`]: the serial console on the host's terminal.
//! - [`gdb`]: the gdbstub.
//! - [`inspect`]: the MMU as text, for gdb's monitor commands and the TUI.
//! - [`tui`]: `umbra run --tui`, the terminal UI beside the running guest.
//! - [`report`]: the summary line and the exit status.
#![deny(missing_docs)]

pub mod accel;
pub mod cli;
pub mod console;
pub mod gdb;
pub mod inspect;
pub mod loader;
pub mod machine;
pub mod memory_map;
pub mod memory_size;
pub mod platform;
pub mod report;
pub mod rom;
pub mod tui;
