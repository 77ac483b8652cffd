//! What the JIT counts, for the TUI, gdb's `monitor stats` and benchmarks.

use std::sync::OnceLock;

use iced_x86::Mnemonic;

/// One vCPU's JIT counters.
#[derive(Clone, Debug, Default)]
pub struct JitCounters {
    /// Blocks translated.
    pub blocks_translated: u64,
    /// Bytes of host code emitted for them.
    pub host_bytes: u64,
    /// Guest instructions in them.
    pub guest_instructions: u64,
    /// Dispatcher lookups that found a translated block.
    pub cache_hits: u64,
    /// Blocks entered from the dispatcher (chained blocks run without it).
    pub blocks_run: u64,
    /// Guest instructions retired in generated code.
    pub instructions: u64,
    /// Blocks dropped because their code was written, or in a flush.
    pub invalidations: u64,
    /// Times the whole cache was dropped (buffer full, or too many code stores to follow).
    pub flushes: u64,
    /// Direct jumps patched to jump straight to their target's block.
    pub chain_patches: u64,
    /// Those that chained a jump from one page of kernel code to another (far chains).
    pub far_chains: u64,
    /// Instructions the interpreter ran for the JIT.
    pub interpreted: u64,
    /// Exits to the interpreter because an access missed the fast path (a fault, device
    /// memory, a frame whose stores are tracked).
    pub slow_exits: u64,
    /// Accesses the inline TLB lookup sent to the slow path.
    pub slow_accesses: u64,
    /// Instructions left to the interpreter, by mnemonic number (grown as needed).
    pub fallbacks: Vec<u64>,
    /// Instructions left to the interpreter that cross a page or do not decode.
    pub fallbacks_other: u64,
}

impl JitCounters {
    /// Counts an instruction left to the interpreter: `None` when it crosses a page or does
    /// not decode.
    pub fn count_fallback(&mut self, mnemonic: Option<Mnemonic>) {
        match mnemonic {
            Some(mnemonic) => self.count_fallback_number(mnemonic as usize),
            None => self.fallbacks_other += 1,
        }
    }

    /// Counts an instruction left to the interpreter, by its mnemonic's number.
    pub fn count_fallback_number(&mut self, n: usize) {
        if self.fallbacks.len() <= n {
            self.fallbacks.resize(n + 1, 0);
        }
        self.fallbacks[n] += 1;
    }

    /// The counters by name, then the fallbacks by mnemonic, the most frequent first.
    pub fn list(&self) -> Vec<(&'static str, u64)> {
        let mut fallbacks: Vec<_> = self
            .fallbacks
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(n, &count)| (fallback_names()[n], count))
            .collect();
        fallbacks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut list = vec![
            ("jit_blocks_translated", self.blocks_translated),
            ("jit_host_bytes", self.host_bytes),
            ("jit_guest_instructions_translated", self.guest_instructions),
            ("jit_cache_hits", self.cache_hits),
            ("jit_blocks_run", self.blocks_run),
            ("jit_instructions", self.instructions),
            ("jit_invalidations", self.invalidations),
            ("jit_flushes", self.flushes),
            ("jit_chain_patches", self.chain_patches),
            ("jit_far_chains", self.far_chains),
            ("jit_interpreted", self.interpreted),
            ("jit_slow_exits", self.slow_exits),
            ("jit_slow_accesses", self.slow_accesses),
            ("jit_fallbacks_other", self.fallbacks_other),
        ];
        list.extend(fallbacks);
        list
    }
}

/// The fallback counters' names, by mnemonic number: made once.
fn fallback_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        Mnemonic::values()
            .map(|m| {
                let name: &'static str = format!("jit_fallback_{m:?}").to_lowercase().leak();
                name
            })
            .collect()
    })
}
