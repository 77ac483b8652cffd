//! Umbra's guest memory and everything about address translation.
//!
//! - [`addr`]: the address newtypes (`Gpa`, `Gfn`, `Gva`, `Hva`) that keep address spaces apart.
//! - [`memslot`]: guest physical memory as a set of slots (KVM's scalable memslots).
//! - [`paging`]: paging-structure entry bits, paging modes, page sizes, canonical addresses.
//! - [`role`]: the CPU role, every CR0/CR4/EFER bit that changes how page tables are read.
//! - [`walker`]: the guest page-table walker, the reference translation with exact #PF codes.
//! - [`counters`]: the per-vCPU MMU counters, summed on read.
//! - [`shadow`]: shadow pages, the VM-wide cache of guest translations, kept coherent by
//!   write-tracking the guest's page tables.
//! - [`tlb`]: the per-vCPU software TLB, tagged by root.
//! - [`vcpu_mmu`]: one vCPU's MMU: TLB, cached roots, shadow walk, guest walk.
//!
//! The MMU knows nothing about instructions: the interpreter, the JIT, the gdbstub and the TUI
//! all come here to turn guest addresses into host memory.
#![deny(missing_docs)]

pub mod addr;
pub mod counters;
mod frame_set;
pub mod memslot;
pub mod paging;
pub mod role;
pub mod shadow;
pub mod tlb;
pub mod vcpu_mmu;
pub mod walker;
