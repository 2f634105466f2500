//! Lexical normalization of entry paths, before anything touches the filesystem.
//!
//! A layer path is a byte string. It is made relative to the layer root the way Docker and
//! containerd do it: leading `/` and `./` are dropped (an absolute path names a place inside the
//! layer, never on the host), empty and `.` components vanish, and `..` removes the component
//! before it. A `..` with nothing left to remove would leave the root: that is an error, not
//! something to clamp, because a well-formed layer never contains one.
//!
//! Normalization is purely lexical. Symlinks are never consulted here; the filesystem code that
//! follows refuses to traverse them at all.

/// Longest accepted entry path, in bytes, after normalization: Linux's `PATH_MAX`. Longer paths
/// could not be opened from the layer root by any tool in the guest either.
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// Deepest accepted entry path, in components. Every descriptor-based walk over a layer or a
/// view (removal, view building) holds one directory descriptor per level and recurses once per
/// level, so depth is what bounds descriptors and stack. Real images stay far below this.
pub(crate) const MAX_DEPTH: usize = 512;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathProblem {
    /// A `..` climbs above the layer root.
    Escapes,
    /// The path contains a NUL byte, which no filesystem call can carry.
    Nul,
    /// Longer than [`MAX_PATH_BYTES`].
    TooLong,
    /// Deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl PathProblem {
    /// Short reason for error messages.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PathProblem::Escapes => "climbs above the layer root",
            PathProblem::Nul => "contains a NUL byte",
            PathProblem::TooLong => "is longer than PATH_MAX",
            PathProblem::TooDeep => "is nested too deeply",
        }
    }
}

/// A normalized path relative to the layer root: components joined by single `/`, no leading or
/// trailing slash, no `.` or `..` and no empty components. The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelPath(Vec<u8>);

impl RelPath {
    /// The layer root.
    pub(crate) fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Normalizes `raw` as described in the module documentation.
    pub(crate) fn normalize(raw: &[u8]) -> Result<RelPath, PathProblem> {
        if raw.contains(&0) {
            return Err(PathProblem::Nul);
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(PathProblem::Escapes);
                    }
                }
                name => parts.push(name),
            }
        }
        if parts.len() > MAX_DEPTH {
            return Err(PathProblem::TooDeep);
        }
        let joined = parts.join(&b'/');
        if joined.len() > MAX_PATH_BYTES {
            return Err(PathProblem::TooLong);
        }
        Ok(RelPath(joined))
    }

    /// The joined bytes (`a/b/c`; empty for the root).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the layer root.
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Splits into the parent path and the final component. `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(&[u8], &[u8])> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[][..], &self.0[..]),
        })
    }

    /// Appends one component (a directory entry name: no `/`, not `.` or `..`).
    pub(crate) fn join(&self, name: &[u8]) -> RelPath {
        let mut out = Vec::with_capacity(self.0.len() + 1 + name.len());
        out.extend_from_slice(&self.0);
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        RelPath(out)
    }

    /// Number of components (0 for the root).
    pub(crate) fn depth(&self) -> usize {
        depth_of(&self.0)
    }

    /// Lossy text for messages.
    pub(crate) fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// Number of components of a joined relative path.
pub(crate) fn depth_of(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        path.iter().filter(|&&b| b == b'/').count() + 1
    }
}

/// Whether `path` is `prefix` or lies below it (both joined relative paths).
pub(crate) fn is_within(path: &[u8], prefix: &[u8]) -> bool {
    if prefix.is_empty() {
        return true;
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, PathProblem> {
        RelPath::normalize(raw.as_bytes()).map(|p| p.display())
    }

    #[test]
    fn strips_leading_slashes_and_dots() {
        assert_eq!(norm("./a/b").unwrap(), "a/b");
        assert_eq!(norm("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("///a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm("/").unwrap(), "");
    }

    #[test]
    fn resolves_inner_dotdot_lexically() {
        assert_eq!(norm("a/../b").unwrap(), "b");
        assert_eq!(norm("a/b/../../c").unwrap(), "c");
        assert_eq!(norm("a/..").unwrap(), "");
    }

    #[test]
    fn rejects_escapes() {
        assert_eq!(norm(".."), Err(PathProblem::Escapes));
        assert_eq!(norm("../x"), Err(PathProblem::Escapes));
        assert_eq!(norm("a/../../x"), Err(PathProblem::Escapes));
        assert_eq!(norm("/../x"), Err(PathProblem::Escapes));
        assert_eq!(norm("./a/./../.."), Err(PathProblem::Escapes));
    }

    #[test]
    fn rejects_nul_long_and_deep() {
        assert_eq!(RelPath::normalize(b"a\0b"), Err(PathProblem::Nul));
        let long = "x".repeat(MAX_PATH_BYTES + 1);
        assert_eq!(norm(&long), Err(PathProblem::TooLong));
        let deep = "d/".repeat(MAX_DEPTH + 1);
        assert_eq!(norm(&deep), Err(PathProblem::TooDeep));
        let ok = "d/".repeat(MAX_DEPTH);
        assert_eq!(norm(&ok).unwrap().len(), MAX_DEPTH * 2 - 1);
    }

    #[test]
    fn split_join_and_prefix() {
        let p = RelPath::normalize(b"a/b/c").unwrap();
        assert_eq!(p.split_last(), Some((&b"a/b"[..], &b"c"[..])));
        let q = RelPath::normalize(b"c").unwrap();
        assert_eq!(q.split_last(), Some((&b""[..], &b"c"[..])));
        assert_eq!(RelPath::root().split_last(), None);
        assert_eq!(RelPath::root().join(b"x").as_bytes(), b"x");
        assert_eq!(q.join(b"x").as_bytes(), b"c/x");
        assert_eq!(p.depth(), 3);
        assert!(is_within(b"a/b", b"a"));
        assert!(is_within(b"a", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert!(!is_within(b"a-b/c", b"a"));
        assert!(is_within(b"anything", b""));
    }
}
