//! Rates over time: each new vCPU state is compared with the one before it, and the change of
//! each counter per second (or the share of hits) goes into a short history the sparklines
//! draw.

use std::collections::VecDeque;

use super::snapshot::VcpuState;

/// How many samples a series keeps (12 seconds at 10 Hz).
pub const HISTORY: usize = 120;

/// How a series is computed from counters.
#[derive(Clone, Copy, Debug)]
enum Measure {
    /// The change per second of the sum of these counters.
    PerSecond(&'static [&'static str]),
    /// The first counter's change as a percentage of the sum of the changes of both.
    Share(&'static str, &'static str),
}

/// The series, in the order they are shown; a series whose counters the backend does not
/// keep is left out.
const SERIES: [(&str, Measure); 11] = [
    ("TLB hit %", Measure::Share("tlb_hits", "tlb_misses")),
    ("walks/s", Measure::PerSecond(&["guest_walks"])),
    ("faults/s", Measure::PerSecond(&["page_faults"])),
    (
        "CR3 sw/s",
        Measure::PerSecond(&["root_hits", "root_misses"]),
    ),
    ("root hit %", Measure::Share("root_hits", "root_misses")),
    ("zaps/s", Measure::PerSecond(&["shadow_pages_zapped"])),
    ("JIT blk/s", Measure::PerSecond(&["jit_blocks_translated"])),
    ("JIT inv/s", Measure::PerSecond(&["jit_invalidations"])),
    // KVM's binary statistics of the vCPU.
    ("exits/s", Measure::PerSecond(&["exits"])),
    ("KVM pf/s", Measure::PerSecond(&["pf_taken"])),
    ("TLB fl/s", Measure::PerSecond(&["tlb_flush"])),
];

/// One series: its samples, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateSeries {
    /// Its label.
    pub label: &'static str,
    /// The samples, oldest first (at most [`HISTORY`]).
    pub samples: Vec<u64>,
    /// The largest value a sample can take, for a percentage; `None` scales to the samples.
    pub max: Option<u64>,
    /// The latest value as text ("-" before there is one).
    pub latest: String,
}

/// The history of every series.
#[derive(Default)]
pub struct Rates {
    series: Vec<(&'static str, Measure, VecDeque<u64>)>,
    previous: Option<std::sync::Arc<VcpuState>>,
}

impl Rates {
    /// Takes a new vCPU state; a state already seen changes nothing.
    pub fn update(&mut self, state: &std::sync::Arc<VcpuState>) {
        if self
            .previous
            .as_ref()
            .is_some_and(|previous| std::sync::Arc::ptr_eq(previous, state))
        {
            return;
        }
        if self.series.is_empty() {
            self.series = SERIES
                .iter()
                .filter(|(_, measure)| kept(state, *measure))
                .map(|&(label, measure)| (label, measure, VecDeque::with_capacity(HISTORY)))
                .collect();
        }
        if let Some(previous) = &self.previous {
            let seconds = state
                .taken
                .saturating_duration_since(previous.taken)
                .as_secs_f64();
            for (_, measure, samples) in &mut self.series {
                if samples.len() == HISTORY {
                    samples.pop_front();
                }
                samples.push_back(sample(previous, state, *measure, seconds));
            }
        }
        self.previous = Some(state.clone());
    }

    /// The series as the rates pane draws them.
    pub fn series(&self) -> Vec<RateSeries> {
        self.series
            .iter()
            .map(|(label, measure, samples)| RateSeries {
                label,
                samples: samples.iter().copied().collect(),
                max: matches!(measure, Measure::Share(..)).then_some(100),
                latest: samples.back().map_or_else(
                    || "-".to_owned(),
                    |&value| match measure {
                        Measure::Share(..) => format!("{value}%"),
                        Measure::PerSecond(_) => human(value),
                    },
                ),
            })
            .collect()
    }
}

/// Whether the backend keeps the counters a measure needs.
fn kept(state: &VcpuState, measure: Measure) -> bool {
    match measure {
        Measure::PerSecond(names) => names.iter().all(|name| state.counter(name).is_some()),
        Measure::Share(part, rest) => {
            state.counter(part).is_some() && state.counter(rest).is_some()
        }
    }
}

/// The change of `name` from `before` to `after` (0 if it went backwards or is missing).
fn delta(before: &VcpuState, after: &VcpuState, name: &str) -> u64 {
    after
        .counter(name)
        .unwrap_or(0)
        .saturating_sub(before.counter(name).unwrap_or(0))
}

/// One sample of `measure` between two states `seconds` apart.
fn sample(before: &VcpuState, after: &VcpuState, measure: Measure, seconds: f64) -> u64 {
    match measure {
        Measure::PerSecond(names) => {
            let change: u64 = names.iter().map(|name| delta(before, after, name)).sum();
            if seconds > 0.0 {
                (change as f64 / seconds).round() as u64
            } else {
                0
            }
        }
        Measure::Share(part, rest) => {
            let part = delta(before, after, part);
            let total = part + delta(before, after, rest);
            (part * 100).checked_div(total).unwrap_or(0)
        }
    }
}

/// A count in a few characters: 950, 12.3k, 4.1M, 2.0G.
pub fn human(value: u64) -> String {
    let value = value as f64;
    match value {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v => format!("{v}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn state(taken: std::time::Instant, stats: Vec<(&'static str, u64)>) -> Arc<VcpuState> {
        Arc::new(VcpuState {
            taken,
            regs: Default::default(),
            sregs: Default::default(),
            code: Vec::new(),
            walker: None,
            mmu: None,
            stats,
            kernel_stats: Vec::new(),
        })
    }

    #[test]
    fn rates_are_per_second_and_shares_are_percentages() {
        let start = std::time::Instant::now();
        let mut rates = Rates::default();
        rates.update(&state(
            start,
            vec![("tlb_hits", 0), ("tlb_misses", 0), ("guest_walks", 0)],
        ));
        let later = state(
            start + Duration::from_millis(500),
            vec![("tlb_hits", 90), ("tlb_misses", 10), ("guest_walks", 50)],
        );
        rates.update(&later);
        rates.update(&later);
        let series = rates.series();
        let labels: Vec<_> = series.iter().map(|s| s.label).collect();
        assert_eq!(
            labels,
            ["TLB hit %", "walks/s"],
            "series without counters are left out"
        );
        assert_eq!(series[0].samples, [90]);
        assert_eq!(series[0].latest, "90%");
        assert_eq!(series[1].samples, [100], "50 walks in half a second");
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(human(950), "950");
        assert_eq!(human(12_345), "12.3k");
        assert_eq!(human(4_100_000), "4.1M");
    }
}
