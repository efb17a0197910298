//! The daemon's layers, checked from its source: each folder under
//! `monitor/src` is a layer, a layer only uses the layers below it, and no
//! two files of a layer use each other (docs/architecture.md).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Lowest first: a layer may use only those before it.
const LAYERS: [&str; 8] = [
    "model", "kernel", "sources", "table", "expose", "web", "commands", "cli",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path relative to `src`.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // Comments may name any layer; only code uses one.
            let code: String = fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| format!("{l}\n"))
                .collect();
            out.push((rel, code));
        }
    }
}

/// The path segments that follow `prefix` in `text`: `crate::a::b` gives
/// `a`, and `crate::{a::x, b}` gives `a` and `b`.
fn used_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut first = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        if !item.is_empty() {
                            found.insert(std::mem::take(&mut item));
                        }
                        first = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 && first && (c.is_alphanumeric() || c == '_') {
                    item.push(c);
                } else if !item.is_empty() {
                    found.insert(std::mem::take(&mut item));
                    first = false;
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found.retain(|n| !n.is_empty() && n != "self");
    found
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

#[test]
fn layers_only_use_the_layers_below() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut wrong = Vec::new();
    for (path, text) in &files {
        let Some((layer, _)) = path.split_once('/') else {
            continue; // lib.rs and main.rs tie the layers together
        };
        let own = rank(layer).unwrap_or_else(|| panic!("{layer}/ is not a known layer"));
        for used in used_after(text, "crate::") {
            match rank(&used) {
                Some(r) if r > own => wrong.push(format!("{path} uses {used}")),
                Some(_) => {}
                None => wrong.push(format!("{path} uses crate::{used}, which is no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_two_files_of_a_layer_use_each_other() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    // folder -> file stem -> siblings it uses
    let mut uses: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, text) in &files {
        let path = Path::new(path);
        let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
            continue;
        };
        let stem = stem.to_string_lossy().into_owned();
        if stem == "mod" || dir.as_os_str().is_empty() {
            continue;
        }
        let dir = dir.to_string_lossy().replace('/', "::");
        let mut siblings = used_after(text, "super::");
        siblings.extend(used_after(text, &format!("crate::{dir}::")));
        siblings.remove(&stem);
        uses.entry(dir).or_default().insert(stem, siblings);
    }
    let mut cycles = Vec::new();
    for (dir, files) in &uses {
        for (a, used) in files {
            for b in used {
                if files.get(b).is_some_and(|back| back.contains(a)) && a < b {
                    cycles.push(format!("{dir}: {a} <-> {b}"));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_parser_finds_grouped_and_plain_uses() {
    let text =
        "use crate::{\n    model::x,\n    table::{A, B},\n};\nlet y = crate::kernel::host::f();";
    let found: Vec<String> = used_after(text, "crate::").into_iter().collect();
    assert_eq!(found, ["kernel", "model", "table"]);
    assert_eq!(
        used_after("use super::{Table, entry::Key};", "super::")
            .into_iter()
            .collect::<Vec<_>>(),
        ["Table", "entry"]
    );
}

#[test]
fn no_file_is_too_long_to_read() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|(_, code)| code.lines().count() > 600)
        .map(|(path, code)| format!("{path}: {} lines of code", code.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these:\n{}", long.join("\n"));
}
