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
    ("viommu", &["iommu", "mem", "vtd"]),
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
            "viommu",
            "vtd",
        ],
    ),
];

/// Paths a layer may not use although it may use their layer: the guest-facing vIOMMU reaches
/// the physical VT-d model only through the neutral API (DESIGN.md), so it shares the VT-d
/// decoders and register tables but never the translating unit or the physical IOMMU.
const FORBIDDEN: &[(&str, &[&str])] = &[(
    "viommu",
    &[
        "crate::vtd::piommu",
        "crate::vtd::unit",
        "crate::vtd::RemappingUnit",
        "crate::vtd::Translator",
        "crate::vtd::translate::Translator",
        "crate::vtd::cache::Caches",
        "crate::vtd::Caches",
        "crate::vtd::qi::CacheExecutor",
    ],
)];

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

/// Whether `text` names `path`, written out or through a grouped `use` of its parent
/// (`use crate::vtd::{piommu, ...}`).
fn uses_path(text: &str, path: &str) -> bool {
    let compact: String = text.split_whitespace().collect();
    if compact.contains(path) {
        return true;
    }
    let Some((parent, leaf)) = path.rsplit_once("::") else {
        return false;
    };
    compact
        .match_indices(&format!("{parent}::{{"))
        .any(|(i, m)| {
            let group = &compact[i + m.len()..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            group
                .split(',')
                .any(|item| item == leaf || item.starts_with(&format!("{leaf}::")))
        })
}

#[test]
fn test_forbidden_paths_are_found_in_grouped_imports() {
    assert!(uses_path(
        "use crate::vtd::{cap, piommu};",
        "crate::vtd::piommu"
    ));
    assert!(uses_path(
        "use crate::vtd::{\n  piommu::Foo,\n};",
        "crate::vtd::piommu"
    ));
    assert!(uses_path(
        "crate::vtd::piommu::PhysicalIommu::new()",
        "crate::vtd::piommu"
    ));
    assert!(!uses_path(
        "use crate::vtd::{cap, pasid};",
        "crate::vtd::piommu"
    ));
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
        for (_, paths) in FORBIDDEN.iter().filter(|(l, _)| *l == layer) {
            for path in paths.iter().filter(|p| uses_path(&text, p)) {
                violations.push(format!("{}: {layer} uses {path}", file.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layering:\n{}",
        violations.join("\n")
    );
}
