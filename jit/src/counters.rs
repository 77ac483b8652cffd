//! What the JIT counts, for the TUI, gdb's `monitor stats` and benchmarks.

use iced_x86::Mnemonic;
use rustc_hash::FxHashMap;

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
    /// Instructions the interpreter ran for the JIT.
    pub interpreted: u64,
    /// Exits to the interpreter because an access missed the fast path (a fault, device
    /// memory, a frame whose stores are tracked).
    pub slow_exits: u64,
    /// Accesses the inline TLB lookup sent to the slow path.
    pub slow_accesses: u64,
    /// Instructions left to the interpreter, by mnemonic.
    pub fallbacks: FxHashMap<Mnemonic, u64>,
    /// Instructions left to the interpreter that cross a page or do not decode.
    pub fallbacks_other: u64,
}

impl JitCounters {
    /// The counters by name, fallbacks by mnemonic excepted.
    pub fn list(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("jit_blocks_translated", self.blocks_translated),
            ("jit_host_bytes", self.host_bytes),
            ("jit_guest_instructions_translated", self.guest_instructions),
            ("jit_cache_hits", self.cache_hits),
            ("jit_blocks_run", self.blocks_run),
            ("jit_instructions", self.instructions),
            ("jit_invalidations", self.invalidations),
            ("jit_flushes", self.flushes),
            ("jit_chain_patches", self.chain_patches),
            ("jit_interpreted", self.interpreted),
            ("jit_slow_exits", self.slow_exits),
            ("jit_slow_accesses", self.slow_accesses),
            ("jit_fallbacks_other", self.fallbacks_other),
        ]
    }
}
