//! Byte ranges of an object (HTTP `Range: bytes=` semantics), resolved against its size.
use super::BlobError;

/// Which bytes of an object to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Bytes `start ..= end` (an `end` past the object reads to its end).
    Inclusive {
        /// The first byte.
        start: u64,
        /// The last byte.
        end: u64,
    },
    /// From `start` to the end.
    From(u64),
    /// The last `n` bytes (all of them if the object is shorter).
    Last(u64),
}

impl ByteRange {
    /// The first byte and the number of bytes of this range of an object of `size` bytes;
    /// refused if it starts past the end or is empty.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), BlobError> {
        let (start, end) = match self {
            Self::Inclusive { start, end } if end < start => return Err(BlobError::BadRange { start, end }),
            Self::Inclusive { start, end } => (start, end.saturating_add(1).min(size)),
            Self::From(start) => (start, size),
            Self::Last(0) => return Err(BlobError::RangeNotSatisfiable { start: size, size }),
            Self::Last(n) => (size.saturating_sub(n), size),
        };
        if start >= size {
            return Err(BlobError::RangeNotSatisfiable { start, size });
        }
        Ok((start, end - start))
    }
}

/// The first byte and length `range` selects of `size` bytes (all of them without a range).
pub(crate) fn select(range: Option<ByteRange>, size: u64) -> Result<(u64, u64), BlobError> {
    range.map_or(Ok((0, size)), |r| r.resolve(size))
}
