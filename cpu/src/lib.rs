//! Umbra's virtual CPU.
//!
//! - [`state`]: the architectural register state every backend reads and writes.
//! - [`backend`]: the seam between a machine and what runs its guest code
//!   (`Hypervisor -> Vm -> Vcpu`), and the KVM implementation behind it.
#![deny(missing_docs)]

pub mod backend;
pub mod state;
