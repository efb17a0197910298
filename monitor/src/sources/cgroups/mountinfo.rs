//! Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo.

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, path::PathBuf};

/// The cgroup2 mount point in `text`, the contents of /proc/self/mountinfo.
pub fn parse_mountinfo(text: &str) -> Option<PathBuf> {
    cgroup2_mount(text).map(|m| m.point)
}

#[derive(Debug)]
pub(super) struct Mount {
    /// The part of the hierarchy the mount shows: not `/` inside a cgroup
    /// namespace of its own, where cgroups outside it have no path.
    pub root: String,
    pub point: PathBuf,
}

/// The cgroup2 mount, preferring one that shows the whole hierarchy (a
/// container can have its own view and the host's bind-mounted).
pub(super) fn cgroup2_mount(text: &str) -> Option<Mount> {
    // Ties go to the first in mountinfo: min_by_key keeps the first of equals.
    text.lines()
        .filter_map(cgroup2_line)
        .min_by_key(|m| m.root != "/")
}

/// A mountinfo line, if it mounts cgroup2. Its fields (proc(5)): `ID
/// PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`.
fn cgroup2_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // The optional fields (shared:N, master:N, ...) vary in number.
    let dash = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    if *fields.get(dash + 1)? != "cgroup2" {
        return None;
    }
    let root = String::from_utf8_lossy(&unescape(fields.get(3)?)).into_owned();
    let point = PathBuf::from(OsString::from_vec(unescape(fields.get(4)?)));
    Some(Mount { root, point })
}

/// A mountinfo field with its `\ooo` escapes decoded: the kernel escapes
/// space, tab, newline and backslash, which would break the line apart.
pub(super) fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if let Some(escaped) = octal_at(bytes, i) {
            out.push(escaped);
            i += 4;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    out
}

/// The byte a `\ooo` escape at `bytes[i]` stands for.
fn octal_at(bytes: &[u8], i: usize) -> Option<u8> {
    let &[b'\\', a, b, c] = bytes.get(i..i.checked_add(4)?)? else {
        return None;
    };
    [a, b, c].iter().try_fold(0u8, |byte, digit| {
        let value = u8::try_from(char::from(*digit).to_digit(8)?).ok()?;
        byte.checked_mul(8)?.checked_add(value)
    })
}
