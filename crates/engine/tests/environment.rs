//! No hidden switches: every `MSB_*` name in the shipped sources is on the
//! allow-list below, with the reason it cannot weaken a sandbox's isolation,
//! and is documented in the README's environment-variable table; the guest
//! agent obeys no kernel command-line switch but the listed ones.
//!
//! The sources scanned are what ships: the `src/` of every crate linked into
//! the addon, the runtime or the agent, the addon crate (`src/`), the
//! TypeScript facade (`ts/`). Test tools (`oci-testkit`, `hostile-agent`) and
//! test directories are not shipped and not scanned. A name built at run time
//! (`MSB_` followed by something other than a capital letter or digit) cannot
//! be checked and fails the test too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every environment variable the shipped code may read, and why it cannot
/// turn a protection off. A variable that would (a network without the
/// policy, a guard that is skipped, a share that becomes writable) does not
/// belong here: it does not belong in the product.
const ALLOWED: &[(&str, &str)] = &[
    ("MSB_HOME", "where state, caches and logs live"),
    (
        "MSB_ACCEL",
        "kvm or tcg: either way the guest is a VM with the same devices, policy and guard",
    ),
    (
        "MSB_QEMU",
        "which QEMU binary runs; the command line (devices, read-only shares, network) is the engine's",
    ),
    (
        "MSB_KERNEL",
        "an asset path; whoever sets the environment already chooses every binary run",
    ),
    (
        "MSB_AGENT",
        "an asset path; the agent is not a trust boundary (docs/design.md, threat model)",
    ),
    (
        "MSB_RUNTIME",
        "an asset path; whoever sets the environment already chooses every binary run",
    ),
    (
        "MSB_ASSETS_DIR",
        "the directory of the three assets above",
    ),
    (
        "MSB_GUEST_DEBUG",
        "more lines in the guest's console log",
    ),
    ("MSB_LOG", "the runtime's log filter"),
    (
        "MSB_MKFS_EXT4",
        "the program that formats new disk volumes and persistent roots on the host",
    ),
    (
        "MSB_SNAPSHOT",
        "`off` boots every kernel instead of restoring a template: slower, never less isolated",
    ),
    (
        "MSB_SNAPSHOT_MAX_AGE",
        "how long one template serves; shorter means fewer clones share its kernel layout",
    ),
];

/// Kernel command-line switches the guest agent reads (set by the engine).
const ALLOWED_GUEST_ARGS: &[&str] = &["msb.debug"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Shipped source directories, relative to the repository root.
const SHIPPED: &[&str] = &[
    "src",
    "ts",
    "crates/engine/src",
    "crates/runtime/src",
    "crates/control/src",
    "crates/vmm/src",
    "crates/netstack/src",
    "crates/protocol/src",
    "crates/oci/src",
    "crates/state/src",
    "guest/agent/src",
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "ts" | "mts" | "js")
        ) {
            out.push(path);
        }
    }
}

/// `MSB_*` names in `text` with their line numbers; `Err` for a name the
/// scan cannot read (built at run time).
fn msb_names(text: &str) -> Vec<(usize, Result<String, String>)> {
    let mut found = vec![];
    for (number, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut from = 0;
        while let Some(at) = line[from..].find("MSB_") {
            let start = from + at;
            from = start + 4;
            let word_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
            if start > 0 && word_char(bytes[start - 1]) {
                continue;
            }
            let end = line[from..]
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .map_or(line.len(), |n| from + n);
            let name = &line[start..end];
            let rest = &line[end..];
            found.push((
                number + 1,
                if name.len() > 4 && !rest.starts_with(|c: char| c.is_ascii_lowercase()) {
                    Ok(name.trim_end_matches('_').to_string())
                } else {
                    Err(line.trim().to_string())
                },
            ));
            from = end;
        }
    }
    found
}

/// The first cell of each row of the README's "Environment variables" table.
fn readme_variables() -> BTreeSet<String> {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Environment variables"))
        .expect("README.md has an '## Environment variables' section");
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        for (_, name) in msb_names(first_cell) {
            names.insert(name.expect("README names its variables in full"));
        }
    }
    names
}

#[test]
fn shipped_code_reads_only_allowed_documented_variables() {
    let root = repo_root();
    let mut files = vec![];
    for dir in SHIPPED {
        source_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} source files", files.len());

    let mut used: BTreeMap<String, String> = BTreeMap::new();
    let mut unreadable = vec![];
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, name) in msb_names(&text) {
            match name {
                Ok(name) => {
                    used.entry(name)
                        .or_insert_with(|| format!("{shown}:{line}"));
                }
                Err(text) => unreadable.push(format!("{shown}:{line}: {text}")),
            }
        }
    }
    assert!(
        unreadable.is_empty(),
        "environment variable names built at run time cannot be checked: {unreadable:#?}"
    );

    let allowed: BTreeSet<String> = ALLOWED.iter().map(|(n, _)| n.to_string()).collect();
    let unknown: Vec<_> = used
        .iter()
        .filter(|(name, _)| !allowed.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "MSB_* names in shipped code that are not on the allow-list of \
         crates/engine/tests/environment.rs (add one only if it cannot weaken isolation, \
         and document it in README.md): {unknown:#?}"
    );
    let unused: Vec<_> = allowed.iter().filter(|n| !used.contains_key(*n)).collect();
    assert!(
        unused.is_empty(),
        "allowed but no longer read anywhere (remove from the list and README.md): {unused:?}"
    );
    assert_eq!(
        readme_variables(),
        allowed,
        "README.md's environment-variable table must list exactly the allowed variables"
    );
}

#[test]
fn the_agent_obeys_only_listed_command_line_switches() {
    let mut files = vec![];
    source_files(&repo_root().join("guest/agent/src"), &mut files);
    let mut switches = BTreeSet::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("\"msb.") {
            let tail = &rest[at + 1..];
            let end = tail.find('"').unwrap_or(tail.len());
            switches.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    let allowed: BTreeSet<String> = ALLOWED_GUEST_ARGS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        switches, allowed,
        "kernel command-line switches the agent reads (guest/agent/src)"
    );
}

#[test]
fn the_scan_reads_names_and_refuses_built_ones() {
    let names = |text| {
        msb_names(text)
            .into_iter()
            .map(|(_, n)| n.map_err(|_| ()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names("var(\"MSB_HOME\") and `$MSB_LOG`, X_MSB_NOT"),
        [Ok("MSB_HOME".into()), Ok("MSB_LOG".into())]
    );
    assert_eq!(names("format!(\"MSB_{name}\")"), [Err(())]);
    assert_eq!(names("\"MSB_\" + name"), [Err(())]);
    assert_eq!(names("MSB_Lower"), [Err(())]);
}
