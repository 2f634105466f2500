//! The runtime's settings, read from its environment once at startup
//! ([`RuntimeSettings::from_env`], called by `main`) and passed down: nothing
//! else in the runtime, the VMM backends or the network stack reads the
//! environment. (`MSB_LOG`, the log filter, is read by `main` where it sets up
//! logging.)

use std::path::PathBuf;

use msb_vmm::VmmSettings;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub vmm: VmmSettings,
}

impl RuntimeSettings {
    /// `MSB_QEMU`: the QEMU binary (default `qemu-system-x86_64` from `PATH`).
    pub fn from_env() -> Self {
        let mut vmm = VmmSettings::default();
        if let Some(qemu) = std::env::var_os("MSB_QEMU") {
            vmm.qemu = PathBuf::from(qemu);
        }
        Self { vmm }
    }
}
