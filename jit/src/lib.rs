//! umbra-jit
