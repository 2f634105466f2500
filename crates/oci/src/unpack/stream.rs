//! The reader stack under the tar parser, and how its failures are told apart.
//!
//! ```text
//! layer bytes ─ Source ─ (gzip | zstd decoder ─ Decoded) ─ HeaderBudget ─ tar::Archive
//! ```
//!
//! The tar crate, flate2 and zstd all pass an inner reader's `io::Error` through unchanged, so
//! each layer of the stack marks the errors it originates with a private payload type. After a
//! failure, [`classify`] looks at the payload to say whether the source failed to deliver bytes,
//! the compressed stream was corrupt, the metadata budget ran out, or the tar structure itself
//! was bad.
//!
//! The budget exists because the tar crate reads GNU long names, long link names and PAX
//! headers into memory whole, at whatever size their header claims, before handing out the
//! entry they describe. A few megabytes of gzip can claim gigabytes there. The unpacker opens
//! the budget just before asking for the next entry and closes it when the entry arrives; while
//! it is open, at most [`HEADER_BUDGET`] bytes may be read (the padding of the previous entry,
//! the headers, and any name or PAX data). Entry contents are read with the budget closed and
//! are bounded by the unpack limits instead.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

/// Most bytes the tar parser may consume between two entries: enough for 1 MiB of PAX records
/// (the cap Go's `archive/tar`, and with it Docker, applies) plus long names, sparse maps and
/// headers.
pub(crate) const HEADER_BUDGET: u64 = 2 << 20;

/// Error payload: the underlying layer reader failed.
#[derive(Debug)]
struct SourceFailure(io::Error);

/// Error payload: the decompressor rejected its input.
#[derive(Debug)]
struct DecodeFailure(io::Error);

/// Error payload: the parser read more metadata than [`HEADER_BUDGET`] allows.
#[derive(Debug)]
struct BudgetExhausted;

impl fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("entry metadata exceeds the header budget")
    }
}

impl std::error::Error for SourceFailure {}
impl std::error::Error for DecodeFailure {}
impl std::error::Error for BudgetExhausted {}

/// Where a read failure came from.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The layer reader itself failed.
    Source(io::Error),
    /// The compressed stream is corrupt or truncated.
    Decode(io::Error),
    /// Too much metadata before one entry.
    HeaderBudget,
    /// The tar structure is invalid.
    Malformed(io::Error),
}

/// Tells apart the failures described in the module documentation.
pub(crate) fn classify(err: io::Error) -> StreamError {
    let payload = err.get_ref();
    if payload.is_some_and(|p| p.is::<BudgetExhausted>()) {
        return StreamError::HeaderBudget;
    }
    let marked = payload.is_some_and(|p| p.is::<SourceFailure>() || p.is::<DecodeFailure>());
    if !marked {
        return StreamError::Malformed(err);
    }
    let kind = err.kind();
    let Some(inner) = err.into_inner() else {
        return StreamError::Malformed(kind.into());
    };
    match inner.downcast::<SourceFailure>() {
        Ok(source) => StreamError::Source(source.0),
        Err(inner) => match inner.downcast::<DecodeFailure>() {
            Ok(decode) => StreamError::Decode(decode.0),
            Err(other) => StreamError::Malformed(io::Error::new(kind, other)),
        },
    }
}

/// Marks errors of the layer reader.
pub(crate) struct Source<R>(pub(crate) R);

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), SourceFailure(e)))
    }
}

/// Marks errors of a decompressor, passing source errors through.
pub(crate) struct Decoded<R>(pub(crate) R);

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.get_ref().is_some_and(|p| p.is::<SourceFailure>()) {
                e
            } else {
                io::Error::new(e.kind(), DecodeFailure(e))
            }
        })
    }
}

/// The budget shared between [`Budgeted`] and the unpack loop.
#[derive(Debug, Default)]
pub(crate) struct HeaderBudget {
    /// Bytes left while open; `None` while closed (entry contents are being read).
    left: Cell<Option<u64>>,
}

impl HeaderBudget {
    /// Opens the budget before the parser looks for the next entry.
    pub(crate) fn open(&self) {
        self.left.set(Some(HEADER_BUDGET));
    }

    /// Closes it once the parser has handed out an entry.
    pub(crate) fn close(&self) {
        self.left.set(None);
    }
}

/// Enforces [`HeaderBudget`] on the reader handed to the tar parser.
pub(crate) struct Budgeted<R> {
    pub(crate) inner: R,
    pub(crate) budget: Rc<HeaderBudget>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.budget.left.get() else {
            return self.inner.read(buf);
        };
        if left == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, BudgetExhausted));
        }
        let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.budget.left.set(Some(left - n as u64));
        Ok(n)
    }
}
