//! The sandbox runtime: one process per sandbox that owns the VM and everything
//! around it. Its client (the engine inside Node, later the CLI) talks to it in
//! `msb_control` messages over a stream socket; agent traffic passes through it
//! with the runtime checking what the guest sends ([`guard`]).
//!
//! The guard is runtime logic with no VMM in it; it is public so that the
//! fuzz target `guest_messages` can drive it.

mod clients;
mod console;
mod events;
pub mod guard;
mod metrics;
mod record;
mod relay;
mod secrets;
mod settings;
mod snapshot;

pub use relay::run;
pub use settings::RuntimeSettings;
