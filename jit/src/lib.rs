//! umbra-jit: Umbra's translator from guest blocks to host code.
//!
//! A guest basic block (decoded with iced-x86) becomes host x86-64 code (emitted with
//! dynasmrt) that works on the vCPU's registers in a block context, reads the vCPU's TLB
//! for every memory access without leaving generated code, and leaves to the interpreter each
//! instruction it does not translate. The interpreter is the reference: a block's effects are
//! exactly those of interpreting its instructions, and at every exit (a fault in its third
//! load included) the state is what the interpreter would have left.
//!
//! - [`context`]: the block context and the exits.
//! - `code_buffer`: the executable memory.
//! - `emitter`: the pieces of host code (registers, flags, the TLB lookup, exits) and the
//!   routines blocks share.
//! - `translate`: a block's instructions to host code.
//! - `cache`: blocks by guest address, invalidation by page, chaining.
//! - `engine`: the dispatcher, Umbra's emulator's [`BlockEngine`].
//! - [`counters`]: what it counts.

pub mod context;
pub mod counters;

mod cache;
mod code_buffer;
mod emitter;
mod engine;
mod translate;

use umbra_cpu::backend::emu::{BlockEngine, BlockEngineFactory};

pub use engine::Jit;

/// The default `--jit-threshold`: a block is translated the third time it is reached, so code
/// run once or twice (most of a boot) is not worth translating.
pub const DEFAULT_THRESHOLD: u32 = 2;

/// Makes a [`Jit`] for each vCPU.
#[derive(Clone, Copy, Debug)]
pub struct JitFactory {
    /// Times a block is reached before it is translated.
    pub threshold: u32,
}

impl Default for JitFactory {
    fn default() -> Self {
        JitFactory {
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

impl BlockEngineFactory for JitFactory {
    fn create(&self) -> Result<Box<dyn BlockEngine>, String> {
        let jit = Jit::new(self.threshold).map_err(|e| format!("no executable memory: {e}"))?;
        Ok(Box::new(jit))
    }
}
