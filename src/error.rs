//! Engine errors as data for JavaScript, and the error codes' generated type.
//!
//! Async addon calls resolve to `T | NativeFailure` rather than rejecting,
//! because a rejection from napi carries only a Node-API status as its code;
//! the TypeScript layer turns a failure into a typed error class
//! (`ts/errors.ts`), whose `ErrorCode` union is derived from the [`ErrorCode`]
//! enum generated here into `index.d.ts`.

use msb_engine::{HasCode, InvalidOption};
use napi::bindgen_prelude::*;
use napi_derive::napi;

macro_rules! native_error_code {
    ($($(#[doc = $doc:tt])* $variant:ident = $code:tt,)*) => {
        /// Every stable error code (`error.code`), generated from the engine's
        /// one list (`msb_engine::for_each_error_code`).
        #[napi(string_enum)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[napi(value = $code)] $variant,)*
        }
    };
}

msb_engine::for_each_error_code!(native_error_code);

/// An engine error as data. Async calls resolve to `T | NativeFailure` rather
/// than rejecting, because a rejection from napi carries only a Node-API status
/// as its code; the TypeScript layer turns a failure into a typed error class.
#[napi(object)]
pub struct NativeError {
    /// Stable code, e.g. `INVALID_OPTION` (one of `ErrorCode`).
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    pub errno: Option<i32>,
    pub path: Option<String>,
    pub console_tail: Option<String>,
    /// Output collected before the call failed (`LIMIT_EXCEEDED` of an exec).
    pub stdout: Option<Buffer>,
    pub stderr: Option<Buffer>,
}

#[napi(object)]
pub struct NativeFailure {
    pub failure: NativeError,
}

pub(crate) fn failure<E: HasCode + std::error::Error + Send + Sync + 'static>(
    err: E,
) -> NativeFailure {
    let details = err.details();
    let code = err.code().as_str().to_string();
    NativeFailure {
        failure: NativeError {
            code,
            // The message followed by each cause's, as one line a person can act on.
            message: format!("{:#}", anyhow::Error::new(err)),
            field: details.field,
            errno: details.errno,
            path: details.path,
            console_tail: details.console_tail,
            stdout: details.stdout.map(Buffer::from),
            stderr: details.stderr.map(Buffer::from),
        },
    }
}

pub(crate) fn outcome<T, E: HasCode + std::error::Error + Send + Sync + 'static>(
    result: std::result::Result<T, E>,
) -> Either<T, NativeFailure> {
    match result {
        Ok(value) => Either::A(value),
        Err(err) => Either::B(failure(err)),
    }
}

pub(crate) fn done<E: HasCode + std::error::Error + Send + Sync + 'static>(
    result: std::result::Result<(), E>,
) -> Option<NativeFailure> {
    result.err().map(failure)
}

/// A JavaScript number that must be a whole, non-negative safe integer (byte
/// counts, limits); anything else is refused naming `field`, never rounded.
pub(crate) fn whole_number(field: &str, value: f64) -> std::result::Result<u64, InvalidOption> {
    const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
    if value.fract() != 0.0 || !(0.0..=MAX_SAFE_INTEGER).contains(&value) {
        return Err(InvalidOption::new(
            field,
            format!("must be a whole number from 0 to 2^53-1, got {value}"),
        ));
    }
    Ok(value as u64)
}
