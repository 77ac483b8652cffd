//! Memslots: see the module docs once written.
