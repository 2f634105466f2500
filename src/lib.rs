//! Node.js binding: thin `#[napi]` wrappers over `msb-engine`. Conversions and
//! error codes only; every rule lives in the engine. One module per area
//! (`sandbox`, `exec`, `fs`, `image`, `volume`, `error`); this file only wires them.
//!
//! Values from JavaScript are converted strictly: an unknown enum value, a
//! number that is not whole where a count is expected, or incomplete
//! credentials are an `INVALID_OPTION` naming the field, never a silent default.

// Public so that the items napi exports count as used in every build, the
// test harness included (napi registers them at load time, not through Rust).
pub mod error;
pub mod exec;
pub mod fs;
pub mod image;
pub mod sandbox;
pub mod volume;

use std::path::PathBuf;

use msb_engine::EngineSettings;
use napi_derive::napi;

#[napi(object)]
pub struct EngineConfig {
    /// Directory holding vmlinux, msb-agent and msb-runtime.
    pub assets_dir: String,
}

/// The engine's settings for one call: the environment is read here, at the
/// entry point, and passed down.
pub fn settings(engine: EngineConfig) -> EngineSettings {
    EngineSettings::from_env(&PathBuf::from(engine.assets_dir))
}
