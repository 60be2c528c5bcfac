//! The layering of `src/` (docs/ARCHITECTURE.md): the source side and the
//! repository side never import from each other or from the operations, the
//! shared helpers import from neither, and the bottom (`error.rs`,
//! `digest.rs`) imports nothing else of rockup's.

use std::path::Path;

/// Layer folder (or file) → the crate paths its files must not mention.
const FORBIDDEN: [(&str, &[&str]); 5] = [
    ("source", &["crate::repo", "crate::ops"]),
    ("repo", &["crate::source", "crate::ops", "rocksdb::"]),
    ("common", &["crate::source", "crate::repo", "crate::ops"]),
    (
        "error.rs",
        &[
            "crate::common",
            "crate::source",
            "crate::repo",
            "crate::ops",
        ],
    ),
    ("digest.rs", &["crate::"]),
];

#[test]
fn layers_import_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut files = 0;
    for (layer, forbidden) in FORBIDDEN {
        for entry in walkdir::WalkDir::new(src.join(layer)) {
            let entry = entry.unwrap();
            if entry.path().extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let code = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim_start().starts_with("//"));
            for (n, line) in code {
                for path in forbidden.iter().filter(|p| line.contains(*p)) {
                    violations.push(format!("{}:{}: {path}", entry.path().display(), n + 1));
                }
            }
        }
    }
    assert!(files >= 20, "found only {files} files under src/");
    assert!(
        violations.is_empty(),
        "imports against the layering:\n{}",
        violations.join("\n")
    );
}
