//! The sandbox runtime: one process per sandbox that owns the VM and everything
//! around it. Its client (the engine inside Node, later the CLI) talks to it in
//! [`control`] messages over a stream socket; agent traffic passes through it
//! with the runtime checking what the guest sends.

mod console;
pub mod control;
pub mod guard;
mod relay;

pub use relay::run;
