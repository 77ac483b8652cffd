//! Test support shared by Umbra's integration tests.
#![deny(missing_docs)]

pub mod differential;
