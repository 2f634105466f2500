//! Options as callers give them, apart from the objects that run sandboxes
//! (as Firecracker keeps `vmm_config` apart from its builder): plain structs
//! and their validation into the configuration the engine acts on. Every
//! error is an [`InvalidOption`] naming the field as callers spell it.
//!
//! Modules here depend on nothing in the engine but [`crate::error`] (and on
//! each other), so that validation can be read, tested and changed without
//! the machinery that boots a VM.

pub mod exec;
pub mod network;
pub mod patch;
pub mod sandbox;
pub mod secrets;
pub mod storage;

use crate::error::InvalidOption;

pub(crate) fn integer_in(
    field: &str,
    value: Option<f64>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, InvalidOption> {
    let Some(value) = value else {
        return Ok(default);
    };
    if value.fract() != 0.0 || !value.is_finite() || value < min as f64 || value > max as f64 {
        return Err(InvalidOption::new(
            field,
            format!("must be an integer from {min} to {max}, got {value}"),
        ));
    }
    Ok(value as u32)
}

pub(crate) fn validate_env(field: &str, env: &[(String, String)]) -> Result<(), InvalidOption> {
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(InvalidOption::new(
                field,
                format!("{key:?} is not a valid variable name"),
            ));
        }
        if value.contains('\0') {
            return Err(InvalidOption::new(
                format!("{field}.{key}"),
                "contains a NUL byte",
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate_guest_path(field: &str, path: &str) -> Result<(), InvalidOption> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(InvalidOption::new(
            field,
            format!("{path:?} must be an absolute guest path"),
        ));
    }
    Ok(())
}
