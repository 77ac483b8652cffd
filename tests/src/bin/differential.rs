//! Runs a differential campaign: random instruction sequences on KVM and on the interpreter,
//! compared, in every mode. Prints progress, each divergence with the first instruction whose
//! result differs, and the figures at the end; exits with status 1 if anything diverged.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use umbra_cpu::backend::kvm::KvmHypervisor;
use umbra_tests::differential::campaign::Campaign;
use umbra_tests::differential::layout::Mode;

/// Differential testing of Umbra's interpreter against KVM.
#[derive(Parser)]
struct Args {
    /// Sequences to run, spread over the three modes.
    #[arg(long, default_value_t = 3000)]
    sequences: u64,
    /// The first seed; sequence `n` uses seed `seed + n / 3`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Divergences to print in full.
    #[arg(long, default_value_t = 10)]
    reports: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let kvm = match KvmHypervisor::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            eprintln!("differential: {e}");
            return ExitCode::from(2);
        }
    };
    let mut campaign = match Campaign::new(&kvm) {
        Ok(campaign) => campaign,
        Err(e) => {
            eprintln!("differential: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let mut printed = 0;
    let progress_every = (args.sequences / 20).max(1);
    for n in 0..args.sequences {
        let mode = Mode::ALL[(n % 3) as usize];
        let seed = args.seed + n / 3;
        match campaign.run(mode, seed) {
            Ok(Some(report)) if printed < args.reports => {
                printed += 1;
                println!("{report}");
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("differential: {mode} seed {seed}: {e}");
                return ExitCode::from(2);
            }
        }
        if (n + 1) % progress_every == 0 {
            eprintln!(
                "{:>5.1} s  {}",
                start.elapsed().as_secs_f64(),
                campaign.stats
            );
        }
    }
    println!("{}", campaign.stats);
    println!("{:.1} s", start.elapsed().as_secs_f64());
    if campaign.stats.divergences == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
