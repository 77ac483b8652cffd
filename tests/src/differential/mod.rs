//! Differential testing of the interpreter against KVM.
pub mod bisect;
pub mod campaign;
pub mod compare;
pub mod deviations;
pub mod generator;
pub mod layout;
pub mod machine;
pub mod rng;
