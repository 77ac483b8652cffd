//! The code cache: blocks by where they start, indexed by guest page for invalidation.
//!
//! A block is keyed by its guest physical address, its virtual RIP (its code has the
//! addresses of its jumps and RIP-relative operands built in) and its privilege context (the
//! TLB bits it tests), so translations survive CR3 switches that keep the code's mapping.
//! Blocks chain to blocks on their own page, so that dropping every block of a page leaves
//! no jump into them from other pages, except for kernel blocks' far chains, which the
//! dispatcher keeps a list of and takes back first; the memory blocks used is reclaimed
//! when the buffer fills and everything goes.

use iced_x86::Mnemonic;
use rustc_hash::FxHashMap;

use crate::code_buffer::CodeBuffer;

/// Where a block starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlockKey {
    /// The virtual RIP of its first instruction.
    pub rip: u64,
    /// That instruction's guest physical address.
    pub gpa: u64,
    /// The TLB bit of a data read in its privilege context.
    pub read_bit: u16,
    /// Whether SSE instructions were allowed (translated) or fault (left to the interpreter).
    pub sse: bool,
    /// Whether SSE floating point could not trap (translated) or could (left to the
    /// interpreter).
    pub float: bool,
}

/// What the cache holds for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    /// Host code at `entry`, for guest code of `guest_bytes` from the key's RIP.
    Code {
        /// The host code's address.
        entry: usize,
        /// The guest code's length.
        guest_bytes: u32,
        /// The guest instructions it runs (its prologue takes as many from the budget).
        instructions: u32,
        /// For a block whose instruction runs into the next page: the guest frame that
        /// page was at when it was translated.
        next_frame: Option<u64>,
    },
    /// The first instruction is the interpreter's: this one (`None`: it crosses a page or
    /// does not decode).
    Interpret(Option<Mnemonic>),
}

/// The jump context far chains are made in (see [`crate::context::Exit::FarChain`]): where
/// the upper half's translations are shared, its TLB tag and the first live epoch of the
/// shared jump context (the chains lead to the blocks those translations give); `None`
/// where they are not (the chains lead to the jump-cache lookup, which checks for itself).
pub(crate) type FarContext = Option<(u32, u64)>;

/// The code cache.
pub(crate) struct CodeCache {
    buffer: CodeBuffer,
    /// Bytes at the buffer's start that outlive flushes (the code blocks share).
    permanent: usize,
    blocks: FxHashMap<BlockKey, Block>,
    /// Keys by guest frame.
    pages: FxHashMap<u64, Vec<BlockKey>>,
    /// How often each untranslated key was looked up.
    heat: FxHashMap<BlockKey, u32>,
    /// Bumped at every flush: patch sites from before one are gone.
    epoch: u64,
    /// The far chains patched in, each site with what it jumped to before.
    far_chains: Vec<(usize, usize)>,
    /// The jump context they were made in.
    far_context: Option<FarContext>,
}

impl CodeCache {
    /// A cache over `buffer`, whose first `permanent` bytes stay.
    pub(crate) fn new(buffer: CodeBuffer, permanent: usize) -> CodeCache {
        CodeCache {
            buffer,
            permanent,
            blocks: FxHashMap::default(),
            pages: FxHashMap::default(),
            heat: FxHashMap::default(),
            epoch: 0,
            far_chains: Vec::new(),
            far_context: None,
        }
    }

    /// The block at `key`.
    #[inline]
    pub(crate) fn get(&self, key: &BlockKey) -> Option<Block> {
        self.blocks.get(key).copied()
    }

    /// Counts a lookup of untranslated `key`: whether it has now been looked up more than
    /// `threshold` times.
    pub(crate) fn heat_up(&mut self, key: BlockKey, threshold: u32) -> bool {
        if threshold == 0 {
            return true;
        }
        let heat = self.heat.entry(key).or_insert(0);
        *heat += 1;
        *heat > threshold
    }

    /// The address the next block appended will have.
    pub(crate) fn next_address(&self) -> usize {
        self.buffer.next_address()
    }

    /// Stores the block at `key`, its host code `code` assembled for
    /// [`CodeCache::next_address`], translated from `guest_bytes` of guest code holding
    /// `instructions` it runs, some of them in `next_frame` when its instruction runs into
    /// the next page (the block goes with that frame's too); its address, or `None` when the
    /// buffer is full.
    pub(crate) fn insert_code(
        &mut self,
        key: BlockKey,
        code: &[u8],
        guest_bytes: u32,
        instructions: u32,
        next_frame: Option<u64>,
    ) -> Option<usize> {
        let address = self.buffer.append(code)?;
        self.insert(
            key,
            Block::Code {
                entry: address,
                guest_bytes,
                instructions,
                next_frame,
            },
        );
        if let Some(frame) = next_frame {
            self.pages.entry(frame).or_default().push(key);
        }
        Some(address)
    }

    /// Records that the block at `key` would start with an instruction for the interpreter.
    pub(crate) fn insert_interpreted(&mut self, key: BlockKey, mnemonic: Option<Mnemonic>) {
        self.insert(key, Block::Interpret(mnemonic));
    }

    fn insert(&mut self, key: BlockKey, block: Block) {
        self.heat.remove(&key);
        self.blocks.insert(key, block);
        self.pages.entry(key.gpa >> 12).or_default().push(key);
    }

    /// Drops every block on guest frame `gfn`; how many there were. The far chains go back
    /// first: some may lead there.
    pub(crate) fn invalidate_page(&mut self, gfn: u64) -> usize {
        self.unlink_far_chains();
        let keys = self.pages.remove(&gfn).unwrap_or_default();
        for key in &keys {
            self.blocks.remove(key);
        }
        keys.len()
    }

    /// Drops every block; how many there were.
    pub(crate) fn flush(&mut self) -> usize {
        let count = self.blocks.len();
        self.blocks.clear();
        self.pages.clear();
        self.heat.clear();
        self.buffer.truncate(self.permanent);
        self.epoch += 1;
        // Their code is gone.
        self.far_chains.clear();
        count
    }

    /// The flush epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Patches the chaining jump at `site` to `target`.
    pub(crate) fn patch(&mut self, site: usize, target: usize) {
        self.buffer.patch_jump(site, target);
    }

    /// Patches the far chain at `site` to `target`, in jump context `context`
    /// ([`CodeCache::keep_far_chains`] was told it).
    pub(crate) fn chain_far(&mut self, site: usize, target: usize, context: FarContext) {
        debug_assert_eq!(self.far_context, Some(context));
        let before = self.buffer.jump_target(site);
        self.buffer.patch_jump(site, target);
        self.far_chains.push((site, before));
    }

    /// Keeps the far chains if they were made in jump context `context`, and takes them back
    /// otherwise; those made from now on are made in `context`.
    pub(crate) fn keep_far_chains(&mut self, context: FarContext) {
        if self.far_context != Some(context) {
            self.unlink_far_chains();
            self.far_context = Some(context);
        }
    }

    /// Points every far chain back at what it jumped to before it was patched.
    fn unlink_far_chains(&mut self) {
        for (site, before) in std::mem::take(&mut self.far_chains) {
            self.buffer.patch_jump(site, before);
        }
    }

    /// Bytes of host code in the buffer.
    pub(crate) fn code_bytes(&self) -> usize {
        self.buffer.used() - self.permanent
    }
}
