//! The MMU's per-vCPU counters: cheap to bump, readable from other threads, summed on read.
//!
//! Each vCPU owns one [`VcpuCounters`] and is its only writer: a bump is a relaxed load and a
//! relaxed store (no read-modify-write, so no locked instruction on the hot path), and any
//! thread (the TUI, a debugger, a benchmark) reads a consistent-enough [`MmuCounters`] snapshot
//! with relaxed loads. The shadow MMU keeps a weak reference to every vCPU's counters and sums
//! them on read ([`crate::shadow::ShadowMmu::vcpu_totals`]).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// A snapshot of MMU counters: of one vCPU, or summed over all of them.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct MmuCounters {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// One vCPU's live counters.
        #[derive(Debug, Default)]
        pub struct VcpuCounters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl VcpuCounters {
            /// The counters now.
            pub fn snapshot(&self) -> MmuCounters {
                MmuCounters {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }

        impl std::ops::AddAssign for MmuCounters {
            fn add_assign(&mut self, other: MmuCounters) {
                $(self.$name += other.$name;)*
            }
        }

        impl MmuCounters {
            /// Each counter with its name, for printing.
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Translations the TLB answered.
    tlb_hits,
    /// Translations the TLB could not answer.
    tlb_misses,
    /// TLB entries filled.
    tlb_fills,
    /// Whole-TLB flushes.
    tlb_flushes,
    /// TLB flushes of the entries for some guest frames only.
    tlb_frame_flushes,
    /// TLB misses the shadow tree answered.
    shadow_hits,
    /// Guest page walks.
    walks,
    /// Page faults raised for a non-present entry.
    faults_not_present,
    /// Page faults raised for a protection violation (rights, SMEP, SMAP, protection keys).
    faults_protection,
    /// Page faults raised for a reserved bit.
    faults_reserved,
    /// Root switches that found the root cached.
    root_hits,
    /// Root switches that had to take a new root.
    root_misses,
}

impl VcpuCounters {
    /// Adds one to a counter. Only the owning vCPU's thread calls this.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

impl VcpuCounters {
    /// Adds `hits` to the TLB hits. Only the owning vCPU's thread calls this.
    pub(crate) fn add_tlb_hits(&self, hits: u64) {
        let cell = &self.tlb_hits;
        cell.store(cell.load(Ordering::Relaxed) + hits, Ordering::Relaxed);
    }
}

impl MmuCounters {
    /// Page faults of every kind.
    pub fn page_faults(&self) -> u64 {
        self.faults_not_present + self.faults_protection + self.faults_reserved
    }
}

/// Names a counter of [`VcpuCounters`] for [`VcpuCounters::bump`]: `bump!(cells, walks)`.
macro_rules! bump {
    ($cells:expr, $name:ident) => {
        $crate::counters::VcpuCounters::bump(&$cells.$name)
    };
}
pub(crate) use bump;
