//! The layers of DESIGN.md import only downward. This reads every source file's `crate::`
//! paths (and `use super::` never crosses a layer: each layer is one top-level module) and
//! fails on an import that points up or sideways.

use std::collections::BTreeMap;
use std::path::Path;

/// Each layer and the layers it may use. `iommu` is the neutral API: the VT-d model implements
/// it (so `vtd` uses `iommu`), devices reach the IOMMU through `ats`/`pri` and `iommu` only.
const ALLOWED: &[(&str, &[&str])] = &[
    ("vfio_user", &[]),
    ("mem", &["vfio_user"]),
    ("pci", &[]),
    ("iommu", &["mem"]),
    ("vtd", &["iommu", "mem"]),
    ("endpoint", &["mem", "pci", "vfio_user"]),
    ("ats", &["iommu", "mem"]),
    ("pri", &["iommu", "mem", "pci"]),
    (
        "devices",
        &[
            "ats",
            "endpoint",
            "iommu",
            "mem",
            "pci",
            "pri",
            "vfio_user",
            "vtd",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file belongs to (its top-level module), if any.
fn layer_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    if rel.starts_with("devices") {
        return Some("devices".into());
    }
    Some(first.trim_end_matches(".rs").to_string())
}

#[test]
fn test_layers_import_only_downward() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("devices"), &mut files);
    let mut violations = Vec::new();
    for file in files {
        let base = if file.starts_with(root.join("devices")) {
            root.to_path_buf()
        } else {
            root.join("src")
        };
        let Some(layer) = layer_of(&base, &file) else {
            continue;
        };
        let Some(ok) = allowed.get(layer.as_str()) else {
            continue;
        }; // lib.rs, main.rs
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let target: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if target != layer && !ok.contains(&target.as_str()) {
                violations.push(format!("{}: {layer} uses crate::{target}", file.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layering:\n{}",
        violations.join("\n")
    );
}
