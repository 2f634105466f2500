//! OCI images: references, pulling with verification into a content-addressed
//! blob store, and unpacking layers into image root filesystems.

pub mod unpack;
pub mod view;
