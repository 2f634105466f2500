//! `msb-oci-testkit`: builds OCI images from directories and pushes them, through `oci-client`, to
//! the loopback registries that `scripts/registry.sh` runs. Tests and benchmarks use it to make the
//! images they then pull through the SDK.
//!
//! ```text
//! msb-oci-testkit push --ref 127.0.0.1:5000/busybox:latest --layer DIR [--layer DIR | --raw-layer FILE]...
//!     [--env K=V]... [--cmd ARG]... [--entrypoint ARG]... [--workdir P] [--user U]
//!     [--platform linux/amd64] [--insecure] [--ca PEM] [--username U --password P]
//! msb-oci-testkit index --ref R --manifest linux/amd64=R1 --manifest linux/arm64=R2 [...]
//! ```
//! Both print the digest of what they pushed (the manifest, the index) on stdout and nothing else.
//! Layers are stacked bottom first in command-line order, `--layer` and `--raw-layer` interleaved.

mod image;
mod layer;
mod registry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use oci_client::manifest::{
    OciImageManifest, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::Reference;

use crate::image::{IndexEntry, Platform, RuntimeConfig};
use crate::layer::{Layer, LayerError};
use crate::registry::{Connection, Registry, RegistryError};

#[derive(Parser)]
#[command(
    name = "msb-oci-testkit",
    about = "Build OCI test images and push them to a registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from directories (and prebuilt tars) and push it; prints the manifest digest.
    Push(Box<PushArgs>),
    /// Push an image index over manifests already pushed; prints the index digest.
    Index(IndexArgs),
}

#[derive(Args)]
struct ConnectionArgs {
    /// Talk plain HTTP instead of HTTPS.
    #[arg(long)]
    insecure: bool,
    /// Also trust this root CA (PEM).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Basic credentials, for the registry or its token server.
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// The password going with --username.
    #[arg(long, requires = "username")]
    password: Option<String>,
}

impl ConnectionArgs {
    fn connection(&self) -> Connection {
        Connection {
            insecure: self.insecure,
            ca: self.ca.clone(),
            credentials: self.username.clone().zip(self.password.clone()),
        }
    }
}

#[derive(Args)]
struct PushArgs {
    /// Where to push, with the registry spelled out: HOST:PORT/NAME[:TAG].
    #[arg(long = "ref", value_name = "REF")]
    reference: String,
    /// A directory to pack as one gzip-compressed layer.
    #[arg(long, value_name = "DIR")]
    layer: Vec<PathBuf>,
    /// A tar file to push byte for byte as one layer (gzip if it starts with the gzip magic).
    #[arg(long = "raw-layer", value_name = "FILE")]
    raw_layer: Vec<PathBuf>,
    /// An environment variable of the image config.
    #[arg(long, value_name = "K=V", allow_hyphen_values = true)]
    env: Vec<String>,
    /// One argument of the config's Cmd (repeat for more).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// One argument of the config's Entrypoint (repeat for more).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// The config's WorkingDir.
    #[arg(long, value_name = "PATH")]
    workdir: Option<String>,
    /// The config's User (NAME, UID or UID:GID).
    #[arg(long)]
    user: Option<String>,
    /// os/architecture[/variant] recorded in the image config.
    #[arg(long, default_value = "linux/amd64")]
    platform: Platform,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args)]
struct IndexArgs {
    /// Where to push the index: HOST:PORT/NAME[:TAG].
    #[arg(long = "ref", value_name = "REF")]
    reference: String,
    /// PLATFORM=REF of a manifest on the same registry; one from another repository is copied in.
    #[arg(long = "manifest", value_name = "PLATFORM=REF", required = true)]
    manifests: Vec<String>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference} is not an image manifest")]
    NotAManifest {
        reference: String,
        #[source]
        source: Option<serde_json::Error>,
    },
    #[error("cannot serialize the image index")]
    Index(#[source] serde_json::Error),
}

/// Where a layer comes from, in command-line order.
enum LayerSource {
    Dir(PathBuf),
    Tar(PathBuf),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Push(args) => {
            let push = matches
                .subcommand_matches("push")
                .expect("clap matched the push subcommand");
            let sources = layer_sources(push, &args);
            push_image(*args, sources).await
        }
        Command::Index(args) => push_index(args).await,
    };
    match result {
        Ok(digest) => {
            println!("{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("msb-oci-testkit: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// `--layer` and `--raw-layer` merged back into the order they were given in.
fn layer_sources(matches: &clap::ArgMatches, args: &PushArgs) -> Vec<LayerSource> {
    let indexed = |id: &str| matches.indices_of(id).into_iter().flatten();
    let mut sources: Vec<(usize, LayerSource)> = indexed("layer")
        .zip(&args.layer)
        .map(|(i, p)| (i, LayerSource::Dir(p.clone())))
        .chain(
            indexed("raw_layer")
                .zip(&args.raw_layer)
                .map(|(i, p)| (i, LayerSource::Tar(p.clone()))),
        )
        .collect();
    sources.sort_by_key(|(i, _)| *i);
    sources.into_iter().map(|(_, s)| s).collect()
}

/// A reference with its registry spelled out: this tool only talks to registries it is pointed at,
/// never to a default one.
fn parse_reference(s: &str) -> Result<Reference, Error> {
    let reference: Reference = s
        .parse()
        .map_err(|e| Error::Usage(format!("bad reference {s:?}: {e}")))?;
    if !s.starts_with(&format!("{}/", reference.registry())) {
        return Err(Error::Usage(format!(
            "reference {s:?} must start with the registry (HOST:PORT/NAME[:TAG])"
        )));
    }
    Ok(reference)
}

async fn push_image(args: PushArgs, sources: Vec<LayerSource>) -> Result<String, Error> {
    let reference = parse_reference(&args.reference)?;
    if sources.is_empty() {
        return Err(Error::Usage(
            "give at least one --layer or --raw-layer".into(),
        ));
    }
    if let Some(bad) = args.env.iter().find(|e| !e.contains('=')) {
        return Err(Error::Usage(format!("--env {bad:?} is not K=V")));
    }
    let registry = Registry::connect(&args.connection.connection())?;

    // Packing is CPU-bound and independent per layer: one thread each.
    let layers: Vec<Layer> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .map(|source| {
                scope.spawn(move || match source {
                    LayerSource::Dir(dir) => layer::from_dir(dir),
                    LayerSource::Tar(file) => layer::from_tar_file(file),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a layer-building thread panicked"))
            .collect::<Result<_, _>>()
    })?;
    for (layer, source) in layers.iter().zip(&sources) {
        if let LayerSource::Dir(dir) = source {
            for skipped in &layer.skipped {
                eprintln!(
                    "msb-oci-testkit: left out {} (device node or socket)",
                    dir.join(skipped).display()
                );
            }
        }
    }

    let runtime = RuntimeConfig {
        env: args.env,
        cmd: (!args.cmd.is_empty()).then_some(args.cmd),
        entrypoint: (!args.entrypoint.is_empty()).then_some(args.entrypoint),
        working_dir: args.workdir,
        user: args.user,
    };
    let config = image::config_json(&args.platform, &runtime, &layers);
    let config_digest = layer::sha256_digest(&config);
    let manifest = image::manifest_json(&config, &layers);

    registry.authorize_push(&reference).await?;
    let blobs = layers
        .into_iter()
        .map(|l| (l.digest, l.data))
        .chain([(config_digest, config)]);
    let pushes = blobs.map(|(digest, data)| {
        let registry = &registry;
        let reference = &reference;
        async move {
            let size = data.len();
            let uploaded = registry.push_blob(reference, data, &digest).await?;
            let what = if uploaded { "pushed" } else { "already there:" };
            eprintln!("msb-oci-testkit: {what} {digest} ({size} bytes)");
            Ok::<_, RegistryError>(())
        }
    });
    futures::future::try_join_all(pushes).await?;
    Ok(registry
        .push_manifest(&reference, manifest, OCI_IMAGE_MEDIA_TYPE)
        .await?)
}

async fn push_index(args: IndexArgs) -> Result<String, Error> {
    let target = parse_reference(&args.reference)?;
    let registry = Registry::connect(&args.connection.connection())?;
    registry.authorize_push(&target).await?;

    let mut entries = Vec::new();
    for spec in &args.manifests {
        let (platform, source) = spec
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--manifest {spec:?} is not PLATFORM=REF")))?;
        let platform: Platform = platform.parse().map_err(Error::Usage)?;
        let source = parse_reference(source)?;
        if source.registry() != target.registry() {
            return Err(Error::Usage(format!(
                "--manifest {spec:?}: the manifest must be on {}, the index's registry",
                target.registry()
            )));
        }

        let (body, digest) = registry
            .pull_manifest(&source, &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE])
            .await?;
        let not_a_manifest = |source| Error::NotAManifest {
            reference: spec.clone(),
            source,
        };
        let manifest: OciImageManifest =
            serde_json::from_slice(&body).map_err(|e| not_a_manifest(Some(e)))?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_string());
        if media_type != OCI_IMAGE_MEDIA_TYPE && media_type != IMAGE_MANIFEST_MEDIA_TYPE {
            return Err(not_a_manifest(None));
        }

        if source.repository() != target.repository() {
            // An index may only point at manifests of its own repository: copy the image over.
            for digest in std::iter::once(&manifest.config.digest)
                .chain(manifest.layers.iter().map(|l| &l.digest))
            {
                registry.copy_blob(&source, &target, digest).await?;
            }
            let by_digest = Reference::with_digest(
                target.registry().to_string(),
                target.repository().to_string(),
                digest.clone(),
            );
            registry
                .push_manifest(&by_digest, body.clone(), &media_type)
                .await?;
        }
        entries.push(IndexEntry {
            platform,
            media_type,
            digest,
            size: body.len(),
        });
    }

    let index = image::index_json(&entries).map_err(Error::Index)?;
    Ok(registry
        .push_manifest(&target, index, OCI_IMAGE_INDEX_MEDIA_TYPE)
        .await?)
}
