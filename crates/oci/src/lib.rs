//! OCI images: references, pulling with verification into a content-addressed
//! cache, and unpacking layers safely into image root filesystems.

pub mod pull;
pub mod registry;
pub mod store;
pub mod unpack;
pub mod view;

pub use pull::{pull, PullError, PullEvent, PullOptions, PulledImage, RuntimeConfig};
pub use registry::{Credentials, ImageRef, ReferenceError, RegistryOptions};
pub use store::Store;
