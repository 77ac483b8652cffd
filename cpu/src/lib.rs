//! umbra-cpu
