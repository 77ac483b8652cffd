//! Integration tests across Umbra's crates live in `tests/`; this library is empty.
