//! Firmware ROM images: a built-in one by name, or a file as QEMU's `-bios` takes it.

use std::borrow::Cow;
use std::path::Path;

/// The granularity of a ROM image's size, as QEMU's `-bios` requires.
pub const ROM_GRANULE: usize = 64 << 10;
/// The largest ROM image Umbra maps (the PC's firmware window under 4 GiB).
pub const MAX_ROM_SIZE: usize = 16 << 20;

/// A firmware image ready to map.
#[derive(Debug)]
pub struct RomImage {
    /// Its name for messages: the built-in name or the file's path.
    pub name: String,
    /// Its bytes, a non-zero multiple of [`ROM_GRANULE`] long.
    pub bytes: Cow<'static, [u8]>,
}

/// Why a firmware image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RomError {
    /// Neither a built-in name nor a readable file.
    #[error(
        "no built-in firmware named '{0}' and no such file (umbra firmware list shows the built-in ones)"
    )]
    NotFound(String),
    /// The file could not be read.
    #[error("cannot read firmware image {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file has a size no PC firmware has.
    #[error(
        "firmware image {path} is {size} bytes: a ROM image must be a non-zero multiple of 64 KiB, at most 16 MiB"
    )]
    BadSize {
        /// The file.
        path: String,
        /// Its size.
        size: usize,
    },
}

impl RomImage {
    /// The built-in image called `spec`, or else the file at path `spec`.
    pub fn resolve(spec: &str) -> Result<RomImage, RomError> {
        if let Some(image) = umbra_firmware::find(spec) {
            return Ok(RomImage {
                name: image.name.to_owned(),
                bytes: Cow::Borrowed(image.rom),
            });
        }
        let path = Path::new(spec);
        if !path.exists() {
            return Err(RomError::NotFound(spec.to_owned()));
        }
        let bytes = std::fs::read(path).map_err(|source| RomError::Read {
            path: spec.to_owned(),
            source,
        })?;
        let size = bytes.len();
        if size == 0 || !size.is_multiple_of(ROM_GRANULE) || size > MAX_ROM_SIZE {
            return Err(RomError::BadSize {
                path: spec.to_owned(),
                size,
            });
        }
        Ok(RomImage {
            name: spec.to_owned(),
            bytes: Cow::Owned(bytes),
        })
    }
}
