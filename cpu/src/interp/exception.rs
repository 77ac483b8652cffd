//! Exceptions as the interpreter raises them, and the SDM's rules for combining two of them.

use std::fmt;

/// An exception vector (SDM Vol. 3A, Table 6-1).
pub mod vector {
    /// #DE: divide error.
    pub const DE: u8 = 0;
    /// #DB: debug.
    pub const DB: u8 = 1;
    /// NMI.
    pub const NMI: u8 = 2;
    /// #BP: breakpoint (INT3).
    pub const BP: u8 = 3;
    /// #OF: overflow (INTO).
    pub const OF: u8 = 4;
    /// #BR: BOUND range exceeded.
    pub const BR: u8 = 5;
    /// #UD: invalid opcode.
    pub const UD: u8 = 6;
    /// #NM: device not available.
    pub const NM: u8 = 7;
    /// #DF: double fault.
    pub const DF: u8 = 8;
    /// #TS: invalid TSS.
    pub const TS: u8 = 10;
    /// #NP: segment not present.
    pub const NP: u8 = 11;
    /// #SS: stack-segment fault.
    pub const SS: u8 = 12;
    /// #GP: general protection.
    pub const GP: u8 = 13;
    /// #PF: page fault.
    pub const PF: u8 = 14;
    /// #MF: x87 floating-point error.
    pub const MF: u8 = 16;
    /// #AC: alignment check.
    pub const AC: u8 = 17;
    /// #MC: machine check.
    pub const MC: u8 = 18;
    /// #XM: SIMD floating-point exception.
    pub const XM: u8 = 19;
}

/// An exception raised by an instruction or by event delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector.
    pub vector: u8,
    /// The error code, for the vectors that push one.
    pub error_code: Option<u32>,
    /// For #PF: the faulting linear address, loaded into CR2 when the fault is delivered.
    pub fault_address: Option<u64>,
}

impl Exception {
    /// An exception without an error code.
    pub const fn new(vector: u8) -> Exception {
        Exception {
            vector,
            error_code: None,
            fault_address: None,
        }
    }

    /// An exception with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Exception {
        Exception {
            vector,
            error_code: Some(code),
            fault_address: None,
        }
    }

    /// #UD.
    pub const fn ud() -> Exception {
        Exception::new(vector::UD)
    }

    /// #GP with `code` (0 for most causes; a selector's index for segment causes).
    pub const fn gp(code: u32) -> Exception {
        Exception::with_code(vector::GP, code)
    }

    /// #SS with `code`.
    pub const fn ss(code: u32) -> Exception {
        Exception::with_code(vector::SS, code)
    }

    /// #NP with `code`.
    pub const fn np(code: u32) -> Exception {
        Exception::with_code(vector::NP, code)
    }

    /// #TS with `code`.
    pub const fn ts(code: u32) -> Exception {
        Exception::with_code(vector::TS, code)
    }

    /// #DE.
    pub const fn de() -> Exception {
        Exception::new(vector::DE)
    }

    /// #NM.
    pub const fn nm() -> Exception {
        Exception::new(vector::NM)
    }

    /// #PF at `address` with `error_code`.
    pub const fn pf(address: u64, error_code: u32) -> Exception {
        Exception {
            vector: vector::PF,
            error_code: Some(error_code),
            fault_address: Some(address),
        }
    }

    /// The exception's class for double-fault purposes (SDM Vol. 3A, Table 6-4).
    pub const fn class(self) -> ExceptionClass {
        match self.vector {
            vector::DE | vector::TS | vector::NP | vector::SS | vector::GP => {
                ExceptionClass::Contributory
            }
            vector::PF => ExceptionClass::PageFault,
            vector::DF => ExceptionClass::DoubleFault,
            _ => ExceptionClass::Benign,
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.vector {
            vector::DE => "#DE",
            vector::DB => "#DB",
            vector::NMI => "NMI",
            vector::BP => "#BP",
            vector::OF => "#OF",
            vector::BR => "#BR",
            vector::UD => "#UD",
            vector::NM => "#NM",
            vector::DF => "#DF",
            vector::TS => "#TS",
            vector::NP => "#NP",
            vector::SS => "#SS",
            vector::GP => "#GP",
            vector::PF => "#PF",
            vector::MF => "#MF",
            vector::AC => "#AC",
            vector::MC => "#MC",
            vector::XM => "#XM",
            _ => return write!(f, "vector {}", self.vector),
        };
        f.write_str(name)?;
        if let Some(code) = self.error_code {
            write!(f, "({code:#x})")?;
        }
        Ok(())
    }
}

/// The classes of SDM Vol. 3A, Table 6-4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// Everything not listed below.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP.
    Contributory,
    /// #PF.
    PageFault,
    /// #DF itself.
    DoubleFault,
}

/// What happens when `second` is raised while delivering `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combined {
    /// Deliver `second` as if `first` had not happened (serially).
    Second,
    /// Deliver #DF(0).
    DoubleFault,
    /// Shut the processor down.
    TripleFault,
}

/// Combines two exceptions per SDM Vol. 3A, Table 6-5.
pub const fn combine(first: ExceptionClass, second: ExceptionClass) -> Combined {
    use ExceptionClass::*;
    match (first, second) {
        (DoubleFault, _) => Combined::TripleFault,
        (Contributory, Contributory) => Combined::DoubleFault,
        (PageFault, Contributory | PageFault) => Combined::DoubleFault,
        _ => Combined::Second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_combine_as_table_6_5_says() {
        let gp = Exception::gp(0).class();
        let pf = Exception::pf(0, 0).class();
        let ud = Exception::ud().class();
        let df = Exception::with_code(vector::DF, 0).class();
        assert_eq!(combine(gp, gp), Combined::DoubleFault);
        assert_eq!(combine(gp, pf), Combined::Second);
        assert_eq!(combine(pf, gp), Combined::DoubleFault);
        assert_eq!(combine(pf, pf), Combined::DoubleFault);
        assert_eq!(combine(ud, gp), Combined::Second);
        assert_eq!(combine(gp, ud), Combined::Second);
        assert_eq!(combine(df, ud), Combined::TripleFault);
    }

    #[test]
    fn exceptions_print_as_the_sdm_names_them() {
        assert_eq!(Exception::gp(0x18).to_string(), "#GP(0x18)");
        assert_eq!(Exception::ud().to_string(), "#UD");
    }
}
