//! umbra-devices
