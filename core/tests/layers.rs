//! The crate's dependency picture is a tree from the base upward: every module names only
//! modules of lower layers (or its own). A new `crate::` path that points up or sideways
//! fails this test, so no import cycle can creep back in.

use std::path::Path;

/// The layer of each top-level module: a module may use only lower layers and itself.
const LAYERS: &[(&str, u32)] = &[
    ("id", 0),
    ("limits", 0),
    ("plant", 0),
    ("path", 0),
    ("user", 1),
    ("time", 1),
    ("view", 1),
    ("wire", 2),
    ("chat", 3),
    ("client", 3),
    ("cluster", 4),
    ("seal", 5),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Every `crate::NAME` in `text`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        out.push(name);
    }
    out
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Every `crate::` path in `sources` (path under src, text) that names a layer not below
/// its own module's.
fn violations(sources: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in sources {
        let top = rel.split('/').next().expect("a path").trim_end_matches(".rs");
        if top == "lib" {
            continue;
        }
        let mine = layer(top).unwrap_or_else(|| panic!("module {top} has no layer in LAYERS"));
        for name in crate_paths(text) {
            let Some(theirs) = layer(&name) else { continue }; // a root re-export such as crate::Durable
            if name != top && theirs >= mine {
                out.push(format!("{rel} uses crate::{name}"));
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    files.sort();
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(f).expect("readable source"))
        })
        .collect();
    let v = violations(&sources);
    assert!(v.is_empty(), "modules that use a layer not below their own:\n{}", v.join("\n"));
}

#[test]
fn the_layer_check_catches_an_upward_path() {
    let planted = [
        ("wire/peer.rs".to_string(), "use crate::cluster::Server;\nuse crate::id::NodeId;".to_string()),
        ("chat/state.rs".to_string(), "use crate::client::Client;".to_string()),
        ("cluster/lcr.rs".to_string(), "use crate::chat::causal::Causal;".to_string()),
    ];
    assert_eq!(violations(&planted), ["wire/peer.rs uses crate::cluster", "chat/state.rs uses crate::client"]);
}

#[test]
fn no_source_file_is_over_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).expect("readable source").lines().count();
            (n > 800).then(|| format!("{} has {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}
