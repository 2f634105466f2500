//! The sandbox CA in the guest's trust stores.
//!
//! When the host intercepts TLS for secrets it presents certificates issued by a CA of this
//! sandbox alone; the host sends that CA's certificate (never its key) in `Init`. The agent
//! appends it to every system bundle the image has, in the sandbox's writable overlay (the
//! image itself is never changed), creating the Debian-style bundle when the image has none,
//! and points the common per-tool variables at a bundle that holds it.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

/// System bundles, in the order the trust variables prefer them: Debian/Ubuntu/Alpine,
/// Fedora/RHEL, and the OpenSSL/LibreSSL default of Alpine and others.
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Variables that make OpenSSL, Python `requests`, curl and Node read the bundle.
const TRUST_VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// Installs `pem` and returns the environment that points tools at it.
pub fn install_ca(pem: &str) -> io::Result<Vec<(String, String)>> {
    let mut pem = pem.trim_end().to_owned();
    pem.push('\n');
    // Bundles are often symlinks to one another: append once per real file.
    let mut done = HashSet::new();
    let mut chosen = None;
    for bundle in BUNDLES {
        let path = Path::new(bundle);
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        if !real.is_file() {
            continue;
        }
        if done.insert(real.clone()) {
            append(&real, &pem)?;
        }
        chosen.get_or_insert(*bundle);
    }
    let chosen = match chosen {
        Some(bundle) => bundle,
        None => {
            let bundle = BUNDLES[0];
            let path = Path::new(bundle);
            if path.symlink_metadata().is_ok() {
                // A dangling symlink: replace it rather than write through it.
                std::fs::remove_file(path)?;
            }
            std::fs::create_dir_all(path.parent().expect("an absolute path"))?;
            std::fs::write(path, &pem)?;
            bundle
        }
    };
    Ok(TRUST_VARIABLES
        .iter()
        .map(|name| (name.to_string(), chosen.to_string()))
        .collect())
}

fn append(path: &Path, pem: &str) -> io::Result<()> {
    let existing = std::fs::read(path)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        file.write_all(b"\n")?;
    }
    file.write_all(pem.as_bytes())
}
