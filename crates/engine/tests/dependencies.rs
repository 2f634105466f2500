//! The crate map of docs/design.md ("Crates"), enforced: which workspace crate
//! may depend on which. Above all, the engine and the Node addon never link
//! the runtime, the VMM or the network stack, directly or through another
//! crate: what they share with the runtime is plain data in `msb-control`.
//!
//! Read from `cargo metadata --no-deps` (the workspace's own manifests, no
//! registry access). Normal and build dependencies count (what is linked or
//! run to build); dev-dependencies are test-only and do not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Crates that run inside the caller's Node process.
const CLIENTS: &[&str] = &["msb-engine", "microsandbox-napi"];

/// What the clients must never link, directly or transitively.
const RUNTIME_SIDE: &[&str] = &["msb-runtime", "msb-vmm", "msb-netstack"];

/// Every workspace crate and the workspace crates it may depend on. A new
/// crate must be placed here (and on the map in docs/design.md).
const ALLOWED: &[(&str, &[&str])] = &[
    ("msb-protocol", &[]),
    ("msb-control", &["msb-protocol"]),
    ("msb-oci", &[]),
    ("msb-state", &[]),
    ("msb-vmm", &["msb-control"]),
    // Secrets and TLS interception are the runtime's side (the real values
    // never leave the runtime); the stack and the runtime may use them. The
    // configuration they validate is msb-control's plain data.
    ("msb-secrets", &["msb-control"]),
    ("msb-netstack", &["msb-control", "msb-secrets"]),
    (
        "msb-runtime",
        &[
            "msb-control",
            "msb-netstack",
            "msb-protocol",
            "msb-secrets",
            // The runtime records its sandbox's status (running, stopped, why).
            "msb-state",
            "msb-vmm",
        ],
    ),
    (
        "msb-engine",
        &["msb-control", "msb-oci", "msb-protocol", "msb-state"],
    ),
    ("microsandbox-napi", &["msb-engine"]),
    ("msb-agent", &["msb-protocol"]),
    ("msb-hostile-agent", &["msb-protocol"]),
    ("msb-oci-testkit", &[]),
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Workspace crates and their workspace dependencies (normal and build).
fn workspace_graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| dep["kind"].as_str() != Some("dev"))
                .map(|dep| dep["name"].as_str().unwrap().to_string())
                .filter(|name| members.contains(name))
                .collect();
            (package["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

/// Every crate `from` reaches, each with one path to it.
fn reachable(graph: &Graph, from: &str) -> BTreeMap<String, Vec<String>> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pending = vec![vec![from.to_string()]];
    while let Some(path) = pending.pop() {
        let last = path.last().unwrap();
        for dep in graph.get(last).into_iter().flatten() {
            if !paths.contains_key(dep) {
                let mut next = path.clone();
                next.push(dep.clone());
                paths.insert(dep.clone(), next.clone());
                pending.push(next);
            }
        }
    }
    paths
}

#[test]
fn the_engine_and_the_addon_never_link_the_runtime_side() {
    let graph = workspace_graph();
    for client in CLIENTS {
        assert!(
            graph.contains_key(*client),
            "{client} is not in the workspace"
        );
        let reached = reachable(&graph, client);
        let bad: Vec<String> = RUNTIME_SIDE
            .iter()
            .filter_map(|crate_name| reached.get(*crate_name))
            .map(|path| path.join(" -> "))
            .collect();
        assert!(
            bad.is_empty(),
            "{client} must not depend on the runtime, the VMM or the network stack \
             (share plain data through msb-control instead): {bad:#?}"
        );
    }
}

#[test]
fn every_crate_depends_only_on_what_the_map_allows() {
    let graph = workspace_graph();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let unplaced: Vec<&String> = graph
        .keys()
        .filter(|name| !allowed.contains_key(name.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "crates missing from the map in crates/engine/tests/dependencies.rs and docs/design.md: {unplaced:?}"
    );
    for (name, deps) in &graph {
        let permitted = allowed[name.as_str()];
        let extra: Vec<&String> = deps
            .iter()
            .filter(|dep| !permitted.contains(&dep.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{name} depends on {extra:?}, which the crate map does not allow"
        );
    }
}

#[test]
fn a_transitive_dependency_is_found() {
    let graph: Graph = [
        ("napi", &["engine"][..]),
        ("engine", &["helper"]),
        ("helper", &["msb-netstack"]),
        ("msb-netstack", &[]),
    ]
    .into_iter()
    .map(|(name, deps)| {
        (
            name.to_string(),
            deps.iter().map(|d| d.to_string()).collect(),
        )
    })
    .collect();
    assert_eq!(
        reachable(&graph, "napi")["msb-netstack"],
        ["napi", "engine", "helper", "msb-netstack"]
    );
}
