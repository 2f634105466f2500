//! The registry side, through `oci-client`: connection settings (plain HTTP, an extra CA, basic
//! credentials; the bearer-token flow is oci-client's own) and the few operations pushing needs.

use std::path::PathBuf;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::layer::sha256_digest;

/// How to reach one registry.
pub struct Connection {
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// A PEM file with an extra root CA to trust.
    pub ca: Option<PathBuf>,
    /// Basic credentials, sent to the registry or to its token server.
    pub credentials: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the registry client")]
    Client(#[source] OciDistributionError),
    #[error("{action} {target} failed")]
    Request {
        action: &'static str,
        target: String,
        #[source]
        source: OciDistributionError,
    },
}

pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl Registry {
    pub fn connect(connection: &Connection) -> Result<Self, RegistryError> {
        let mut config = ClientConfig {
            protocol: if connection.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // One PUT per blob instead of 4 MiB PATCH chunks: fewer round trips for big layers.
            use_monolithic_push: true,
            ..ClientConfig::default()
        };
        if let Some(path) = &connection.ca {
            let data = std::fs::read(path).map_err(|source| RegistryError::CaFile {
                path: path.clone(),
                source,
            })?;
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let client = Client::try_from(config).map_err(RegistryError::Client)?;
        let auth = match &connection.credentials {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Self { client, auth })
    }

    /// Authenticates for pushing to `reference`'s repository up front, so that refused
    /// credentials surface as such rather than as a failed upload.
    pub async fn authorize_push(&self, reference: &Reference) -> Result<(), RegistryError> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await
            .map(drop)
            .map_err(request_err("authenticating to push to", reference))
    }

    /// Uploads a blob unless the repository already has it. Returns whether it uploaded.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        data: impl Into<bytes::Bytes>,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        let target = format!(
            "{}/{}@{digest}",
            reference.registry(),
            reference.repository()
        );
        if self
            .client
            .blob_exists(reference, digest)
            .await
            .map_err(request_err("checking for blob", &target))?
        {
            return Ok(false);
        }
        self.client
            .push_blob(reference, data, digest)
            .await
            .map_err(request_err("pushing blob", &target))?;
        Ok(true)
    }

    /// Copies a blob from `source`'s repository into `reference`'s (same registry) if missing.
    pub async fn copy_blob(
        &self,
        source: &Reference,
        reference: &Reference,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let target = format!("{}/{}@{digest}", source.registry(), source.repository());
        if self
            .client
            .blob_exists(reference, digest)
            .await
            .map_err(request_err("checking for blob", &target))?
        {
            return Ok(());
        }
        let mut data = Vec::new();
        self.client
            .pull_blob(source, digest, &mut data)
            .await
            .map_err(request_err("pulling blob", &target))?;
        self.push_blob(reference, data, digest).await?;
        Ok(())
    }

    /// Puts manifest (or index) bytes under `reference` (a tag or a digest). Returns the digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        body: Vec<u8>,
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let digest = sha256_digest(&body);
        let content_type = media_type.parse().map_err(|_| RegistryError::Request {
            action: "pushing manifest",
            target: reference.whole(),
            source: OciDistributionError::GenericError(Some(format!(
                "media type {media_type:?} is not a valid header value"
            ))),
        })?;
        self.client
            .push_manifest_raw(reference, body, content_type)
            .await
            .map_err(request_err("pushing manifest", reference))?;
        Ok(digest)
    }

    /// Fetches a manifest's raw bytes (any of `accepted` media types) and its digest.
    pub async fn pull_manifest(
        &self,
        reference: &Reference,
        accepted: &[&str],
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let (body, digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, accepted)
            .await
            .map_err(request_err("pulling manifest", reference))?;
        Ok((body.to_vec(), digest))
    }
}

fn request_err(
    action: &'static str,
    target: impl ToString,
) -> impl FnOnce(OciDistributionError) -> RegistryError {
    let target = target.to_string();
    move |source| RegistryError::Request {
        action,
        target,
        source,
    }
}
