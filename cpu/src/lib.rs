//! Umbra's virtual CPU.
//!
//! - [`state`]: the architectural register state every backend reads and writes.
//! - [`backend`]: the seam between a machine and what runs its guest code
//!   (`Hypervisor -> Vm -> Vcpu`), with the KVM and emulator implementations behind it.
//! - [`interp`]: the interpreter, the reference for every instruction.
//! - [`debug`]: what a debugger asks of a vCPU (breakpoints, watchpoints, single steps).
#![deny(missing_docs)]

pub mod backend;
pub mod debug;
pub mod interp;
pub mod state;
