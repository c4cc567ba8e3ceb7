//! The crate's dependency picture is a tree from the base upward: every module names only
//! modules of lower layers (or its own). A new `crate::` path that points up or sideways
//! fails this test, so no import cycle can creep back in.

use std::path::Path;

/// The layer of each top-level module: a module may use only lower layers and itself.
const LAYERS: &[(&str, u32)] =
    &[("id", 0), ("limits", 0), ("plant", 0), ("time", 1), ("view", 1), ("wire", 2), ("chat", 3), ("client", 3), ("cluster", 4)];

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

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel.components().next().expect("a path").as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" {
            continue;
        }
        let mine = layer(&top).unwrap_or_else(|| panic!("module {top} has no layer in LAYERS"));
        let text = std::fs::read_to_string(file).expect("readable source");
        for name in crate_paths(&text) {
            let Some(theirs) = layer(&name) else { continue }; // a root re-export such as crate::Durable
            if name != top && theirs >= mine {
                violations.push(format!("{} uses crate::{name}", rel.display()));
            }
        }
    }
    assert!(violations.is_empty(), "modules that use a layer not below their own:\n{}", violations.join("\n"));
}

#[test]
fn the_layer_check_catches_an_upward_path() {
    // A wire module naming the cluster layer is what the test above must reject.
    let paths = crate_paths("use crate::cluster::Server; use crate::id::NodeId;");
    assert_eq!(paths, ["cluster", "id"]);
    assert!(layer("cluster") > layer("wire"));
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
