//! Tidy checks over the source tree (as rust-analyzer's tidy test does): every `.rs` file opens
//! with a `//!` line, `unsafe` appears only in the ternary kernels, and only the schema crate
//! spells the `kitbash:` internal key prefix.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    // Canonical, so that no path carries the `tests/..` of the manifest directory.
    let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    up.canonicalize().unwrap_or(up)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let mut v = Vec::new();
    rust_files(&root().join("crates"), &mut v);
    rust_files(&root().join("tests"), &mut v);
    assert!(v.len() > 20, "found the sources");
    v
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:#?}"
    );
}

#[test]
fn unsafe_only_in_the_ternary_kernels_and_always_with_a_safety_note() {
    // The workspace denies `unsafe_code`; only an `allow` can let it in. Allows must stay in the
    // ternary kernels, and every unsafe block there carries a SAFETY note just above it.
    for p in sources() {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let path = p.display().to_string();
        let in_kernels = path.contains("kitbash-ternary/src/kernel");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            if code.starts_with("#![allow(unsafe_code)]")
                || code.starts_with("#[allow(unsafe_code)]")
            {
                assert!(
                    in_kernels,
                    "{path}:{}: unsafe_code allowed outside kitbash-ternary's kernels",
                    i + 1
                );
            }
            if in_kernels
                && !code.starts_with("//")
                && (code.contains("unsafe {") || code.ends_with("unsafe"))
            {
                let above = &lines[i.saturating_sub(6)..i];
                assert!(
                    above.iter().any(|l| l.contains("SAFETY:")) || line.contains("SAFETY:"),
                    "{path}:{}: unsafe block without a `// SAFETY:` note",
                    i + 1
                );
            }
        }
    }
}

/// Key prefixes of the seeds, as they would appear at the start of a string literal.
const SEED_PREFIXES: &[&str] = &[
    "\"cms:",
    "\"grain:",
    "\"ghost:",
    "\"hat:",
    "\"metrics:",
    "\"physics:state",
    "\"market:snapshot",
    "\"agent:state",
    "\"quantum:",
    "\"entity:",
    "\"wm:",
    "\"spikes:",
    "\"attention:",
    "\"memory:",
    "\"score:",
    "\"session:",
    "\"rate:",
];

#[test]
fn only_the_schema_spells_internal_keys() {
    for p in sources() {
        let path = p.display().to_string();
        if path.contains("kitbash-schema/") || path.contains("/tests/") || path.contains("tidy.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            // `"kitbash:` followed by a lowercase letter is a key; `"kitbash: …` is a message.
            let internal = line.match_indices("\"kitbash:").any(|(at, m)| {
                line[at + m.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase())
            });
            // `"memory:{id}"` is a key; `"memory: loading …"` is a message.
            let seed = SEED_PREFIXES.iter().any(|p| {
                line.match_indices(p)
                    .any(|(at, m)| !line[at + m.len()..].starts_with(' '))
            });
            assert!(
                !internal && !seed,
                "{path}:{}: key spelled outside kitbash-schema",
                i + 1
            );
        }
    }
}
