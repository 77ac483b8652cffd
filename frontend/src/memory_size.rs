//! Memory sizes written as QEMU's `-m` takes them: `512M`, `1G`, `128` (MiB when bare).

use std::fmt;
use std::str::FromStr;

/// The smallest guest Umbra builds: room for the real-mode area under the firmware alias.
pub const MIN_MEMORY: u64 = 1 << 20;
/// The largest guest Umbra builds.
pub const MAX_MEMORY: u64 = 1 << 40;

/// A guest RAM size in bytes, a whole number of 4 KiB pages between [`MIN_MEMORY`] and
/// [`MAX_MEMORY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySize(u64);

impl MemorySize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl Default for MemorySize {
    /// 128 MiB, QEMU's default.
    fn default() -> Self {
        MemorySize(128 << 20)
    }
}

/// Why a memory size was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemorySizeError {
    /// Not a number with an optional K, M, G or T suffix.
    #[error("memory size '{0}' is not a number with an optional K, M, G or T suffix")]
    Syntax(String),
    /// Below [`MIN_MEMORY`].
    #[error("memory size '{0}' is below the 1M minimum")]
    TooSmall(String),
    /// Above [`MAX_MEMORY`].
    #[error("memory size '{0}' is above the 1T maximum")]
    TooLarge(String),
    /// Not a whole number of 4 KiB pages.
    #[error("memory size '{0}' is not a multiple of 4K")]
    Unaligned(String),
}

impl FromStr for MemorySize {
    type Err = MemorySizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || MemorySizeError::Syntax(text.to_owned());
        let trimmed = text.trim();
        let (digits, shift) = match trimmed.char_indices().last().ok_or_else(syntax)? {
            (at, 'k' | 'K') => (&trimmed[..at], 10),
            (at, 'm' | 'M') => (&trimmed[..at], 20),
            (at, 'g' | 'G') => (&trimmed[..at], 30),
            (at, 't' | 'T') => (&trimmed[..at], 40),
            (_, c) if c.is_ascii_digit() => (trimmed, 20),
            _ => return Err(syntax()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let too_large = || MemorySizeError::TooLarge(text.to_owned());
        let value: u64 = digits.parse().map_err(|_| too_large())?;
        let bytes = value.checked_mul(1 << shift).ok_or_else(too_large)?;
        if bytes < MIN_MEMORY {
            Err(MemorySizeError::TooSmall(text.to_owned()))
        } else if bytes > MAX_MEMORY {
            Err(too_large())
        } else if !bytes.is_multiple_of(4096) {
            Err(MemorySizeError::Unaligned(text.to_owned()))
        } else {
            Ok(MemorySize(bytes))
        }
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        let (shift, unit) = units
            .into_iter()
            .find(|(shift, _)| self.0.is_multiple_of(1 << shift))
            .unwrap_or((0, ""));
        write!(f, "{}{unit}", self.0 >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_qemu_reads_them() {
        let parse = |s: &str| s.parse::<MemorySize>().map(MemorySize::bytes);
        assert_eq!(parse("512M"), Ok(512 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("1g"), Ok(1 << 30));
        assert_eq!(parse("128"), Ok(128 << 20));
        assert_eq!(parse("2048k"), Ok(2 << 20));
        assert_eq!(parse("1T"), Ok(1 << 40));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        let parse = |s: &str| s.parse::<MemorySize>();
        assert_eq!(parse("0"), Err(MemorySizeError::TooSmall("0".into())));
        assert_eq!(parse("0M"), Err(MemorySizeError::TooSmall("0M".into())));
        assert_eq!(parse("2T"), Err(MemorySizeError::TooLarge("2T".into())));
        assert_eq!(
            parse("99999999999999999999G"),
            Err(MemorySizeError::TooLarge("99999999999999999999G".into()))
        );
        assert_eq!(
            parse("1025K"),
            Err(MemorySizeError::Unaligned("1025K".into()))
        );
        for junk in ["", "M", "12Q", "-1G", "1.5G", "0x10M", "1 G"] {
            assert_eq!(
                parse(junk),
                Err(MemorySizeError::Syntax(junk.into())),
                "{junk}"
            );
        }
    }

    #[test]
    fn sizes_print_in_their_largest_whole_unit() {
        assert_eq!(MemorySize(128 << 20).to_string(), "128M");
        assert_eq!(MemorySize(3 << 30).to_string(), "3G");
        assert_eq!(MemorySize(1028 << 10).to_string(), "1028K");
    }
}
