//! The page-table walker checked against the Intel SDM (Vol. 3A, chapter 4), mode by mode.

mod bench;
mod modes;
mod props;
mod protection;
mod reserved;
mod support;
