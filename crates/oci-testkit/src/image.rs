//! The JSON documents of an image: its config, its manifest, and an index over several manifests.
//! Each is returned as the exact bytes to push, so their digests are known before pushing.

use std::fmt;
use std::str::FromStr;

use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, Platform as OciPlatform,
    IMAGE_CONFIG_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use serde_json::{json, Map, Value};

use crate::layer::Layer;

/// `os/architecture[/variant]`, as in `linux/amd64` or `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| !p.is_empty();
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!("`{s}` is not os/architecture[/variant]")),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The fields as the image config and an index entry's `platform` spell them.
    fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("architecture".into(), self.architecture.clone().into());
        map.insert("os".into(), self.os.clone().into());
        if let Some(variant) = &self.variant {
            map.insert("variant".into(), variant.clone().into());
        }
        map
    }
}

/// The runtime defaults an image config carries; `None` leaves the field out.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// The OCI image config for `layers` (bottom first). `created` is fixed at the epoch so that the
/// same inputs always give the same config digest.
pub fn config_json(platform: &Platform, runtime: &RuntimeConfig, layers: &[Layer]) -> Vec<u8> {
    let mut config = Map::new();
    if !runtime.env.is_empty() {
        config.insert("Env".into(), json!(runtime.env));
    }
    if let Some(entrypoint) = &runtime.entrypoint {
        config.insert("Entrypoint".into(), json!(entrypoint));
    }
    if let Some(cmd) = &runtime.cmd {
        config.insert("Cmd".into(), json!(cmd));
    }
    if let Some(dir) = &runtime.working_dir {
        config.insert("WorkingDir".into(), json!(dir));
    }
    if let Some(user) = &runtime.user {
        config.insert("User".into(), json!(user));
    }

    let mut doc = platform.to_json();
    doc.insert("created".into(), json!("1970-01-01T00:00:00Z"));
    doc.insert("config".into(), Value::Object(config));
    doc.insert(
        "rootfs".into(),
        json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        }),
    );
    doc.insert(
        "history".into(),
        Value::Array(
            (0..layers.len())
                .map(|i| json!({ "created": "1970-01-01T00:00:00Z", "created_by": format!("msb-oci-testkit layer {i}") }))
                .collect(),
        ),
    );
    serde_json::to_vec(&Value::Object(doc)).expect("a JSON value always serializes")
}

/// The OCI image manifest for a config blob and its layers.
pub fn manifest_json(config: &[u8], layers: &[Layer]) -> Vec<u8> {
    let descriptor = |media_type: &str, digest: String, size: usize| OciDescriptor {
        media_type: media_type.to_string(),
        digest,
        size: size as i64,
        ..OciDescriptor::default()
    };
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: descriptor(
            IMAGE_CONFIG_MEDIA_TYPE,
            crate::layer::sha256_digest(config),
            config.len(),
        ),
        layers: layers
            .iter()
            .map(|l| descriptor(l.media_type, l.digest.clone(), l.data.len()))
            .collect(),
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    serde_json::to_vec(&manifest).expect("a manifest always serializes")
}

/// One manifest an index points at.
pub struct IndexEntry {
    pub platform: Platform,
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

/// The OCI image index over `entries`.
pub fn index_json(entries: &[IndexEntry]) -> Result<Vec<u8>, serde_json::Error> {
    let manifests = entries
        .iter()
        .map(|e| {
            Ok(ImageIndexEntry {
                media_type: e.media_type.clone(),
                digest: e.digest.clone(),
                size: e.size as i64,
                // oci-client's Platform holds oci-spec enums; going through JSON keeps this crate
                // off oci-spec and maps any architecture name the way oci-spec does.
                platform: Some(serde_json::from_value::<OciPlatform>(Value::Object(
                    e.platform.to_json(),
                ))?),
                annotations: None,
                artifact_type: None,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string()),
        manifests,
        artifact_type: None,
        annotations: None,
    };
    serde_json::to_vec(&index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parses_and_prints() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v8".parse::<Platform>().is_err());
    }

    #[test]
    fn index_keeps_platform_fields() {
        let entry = IndexEntry {
            platform: "linux/arm64/v8".parse().unwrap(),
            media_type: OCI_IMAGE_MEDIA_TYPE.into(),
            digest: "sha256:00".into(),
            size: 1,
        };
        let json: Value = serde_json::from_slice(&index_json(&[entry]).unwrap()).unwrap();
        assert_eq!(
            json["manifests"][0]["platform"],
            json!({ "architecture": "arm64", "os": "linux", "variant": "v8" })
        );
    }
}
