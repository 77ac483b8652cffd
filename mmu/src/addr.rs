//! Address newtypes. A guest physical address is never a host address, and a frame number is
//! never a byte address: the types say which is which.

use std::fmt;

/// log2 of the base page size (4 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// The base page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Mask of the offset bits inside a base page.
pub const PAGE_OFFSET_MASK: u64 = PAGE_SIZE - 1;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(
    /// A guest physical address.
    Gpa
);
address_type!(
    /// A guest frame number: a guest physical address shifted right by [`PAGE_SHIFT`].
    Gfn
);
address_type!(
    /// A guest virtual (linear) address.
    Gva
);
address_type!(
    /// A host virtual address inside one of Umbra's guest memory mappings.
    Hva
);

impl Gpa {
    /// The frame this address lies in.
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> PAGE_SHIFT)
    }

    /// The offset of this address inside its 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & PAGE_OFFSET_MASK
    }
}

impl Gfn {
    /// The guest physical address of the first byte of this frame.
    pub const fn gpa(self) -> Gpa {
        Gpa(self.0 << PAGE_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpa_and_gfn_convert_both_ways() {
        let gpa = Gpa(0x1234_5678);
        assert_eq!(gpa.gfn(), Gfn(0x12345));
        assert_eq!(gpa.page_offset(), 0x678);
        assert_eq!(gpa.gfn().gpa(), Gpa(0x1234_5000));
        assert_eq!(format!("{gpa:?}"), "Gpa(0x12345678)");
    }
}
