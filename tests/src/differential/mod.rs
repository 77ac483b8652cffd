//! Differential testing of the interpreter against KVM.
//!
//! A sequence of 10 to 30 random integer instructions runs at CPL 3 in a tiny machine built
//! without firmware ([`layout`]): GDT, IDT, TSS, page tables and exception handlers written
//! into guest memory from Rust, the vCPU state set directly. The same memory image and
//! registers are loaded into a KVM vCPU and an interpreter vCPU ([`machine`]); each runs until
//! the sequence's final INT3 or an exception reaches its CPL 0 handler, and [`compare`]
//! checks how the runs ended, the general registers, RIP, RFLAGS, the segment selectors, the
//! frame the exception pushed (the sequence's last RIP, RFLAGS and RSP, and the error code),
//! CR2 after a page fault, and all of memory. Sequences come from [`generator`]; a campaign
//! ([`campaign`]) runs them in every mode, counts what ran, and on a divergence names the
//! first instruction whose result differs ([`bisect`]).
//!
//! On this project's hosts KVM is PVM, which runs CPL 3 code of a 64-bit code segment
//! natively on the host CPU: an exact oracle for user-mode instructions, down to the flags the
//! SDM leaves undefined (the interpreter computes flags with the host's own instructions).
//! Other CPL 3 code and all CPL 0 code run in KVM's instruction emulator. Where PVM departs
//! from the SDM, [`deviations`] lists the case with its reason, and the campaign counts it
//! under its name instead of failing; where the SDM leaves a result to the processor and
//! Intel's and AMD's differ, the generator leaves the form out (see its docs).
//!
//! `cargo run --release -p umbra-tests --bin differential -- --sequences N --seed S` runs a
//! campaign and prints its figures; `tests/differential.rs` runs a bounded one.

pub mod bisect;
pub mod campaign;
pub mod compare;
pub mod deviations;
pub mod generator;
pub mod layout;
pub mod machine;
pub mod rng;
