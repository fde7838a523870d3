//! Tidiness rules of the crate: a `//!` line opens every file, and `unsafe` lives only in the
//! SIMD kernel modules, each block under a `// SAFETY:` comment.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, text)
        })
        .collect()
}

#[test]
fn every_file_opens_with_a_module_doc() {
    let files = crate_files();
    assert!(files.len() > 10);
    for (path, text) in files {
        assert!(
            text.starts_with("//!"),
            "{path} must start with a `//!` line"
        );
    }
}

#[test]
fn unsafe_only_in_kernel_modules_and_always_justified() {
    const ALLOWED: [&str; 2] = ["src/kernel/x86.rs", "src/kernel/neon.rs"];
    for (path, text) in crate_files() {
        if path.starts_with("tests/") {
            continue; // this file spells the words it looks for
        }
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !code.contains("unsafe {")
                && !code.contains("unsafe fn")
                && !code.contains("unsafe impl")
            {
                continue;
            }
            assert!(
                ALLOWED.contains(&path.as_str()),
                "{path}:{} uses unsafe",
                i + 1
            );
            let justified = lines[i.saturating_sub(6)..i]
                .iter()
                .any(|l| l.trim_start().starts_with("// SAFETY:"));
            assert!(
                justified,
                "{path}:{} has no // SAFETY: comment above it",
                i + 1
            );
        }
        if ALLOWED.contains(&path.as_str()) {
            assert!(text.contains("#![allow(unsafe_code)]"), "{path}");
        } else {
            assert!(
                !text.contains("allow(unsafe_code)"),
                "{path} must not allow unsafe"
            );
        }
    }
}
