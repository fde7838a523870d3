//! Tidy checks over the source tree (as rust-analyzer's tidy test does): every `.rs` file opens
//! with a `//!` line, `unsafe` appears only in the ternary kernels, only the schema crate
//! spells the `kitbash:` internal key prefix, every stream has a trim owner that really trims
//! it (or a documented exemption), and no code caps a stream with `XADD … MAXLEN`.

use std::path::{Path, PathBuf};

use kitbash_schema::{DaemonKind, StreamName, TrimOwner};

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

/// The library sources of one crate (`crates/{name}/src`).
fn crate_sources(name: &str) -> String {
    let mut files = Vec::new();
    rust_files(&root().join("crates").join(name).join("src"), &mut files);
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys of `[section]` in `config/default.toml` that have a comment line above them (or
/// the section's comment block, for keys listed together under one comment).
fn documented_keys(section: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("config/default.toml")).unwrap_or_default();
    let mut keys = Vec::new();
    let mut inside = false;
    let mut commented = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
            commented = false;
        } else if line.starts_with('#') {
            commented = true;
        } else if line.is_empty() {
            commented = false;
        } else if inside
            && commented
            && let Some((k, _)) = line.split_once('=')
        {
            keys.push(k.trim().to_owned());
        }
    }
    keys
}

/// `Ticks(0)` → `Ticks`: the variant's name as code spells it (`StreamName::Ticks`).
fn variant(s: StreamName) -> String {
    let d = format!("{s:?}");
    d.split('(').next().unwrap_or(&d).to_owned()
}

/// Whether `code` names `StreamName::{v}` exactly (not a longer variant such as
/// `EntityPart` for `Entity`).
fn names_variant(code: &str, v: &str) -> bool {
    let pat = format!("StreamName::{v}");
    code.match_indices(&pat).any(|(at, m)| {
        !code[at + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

#[test]
fn every_stream_has_a_trim_owner_that_trims_it_or_is_exempt() {
    let mut names: Vec<String> = ["kitbash", "kitbash-runtime", "kitbash-client"]
        .map(String::from)
        .to_vec();
    names.extend(
        DaemonKind::ALL
            .iter()
            .chain(&[DaemonKind::Example])
            .map(|k| format!("kitbash-{k}")),
    );
    let libraries: Vec<(String, String)> = names
        .into_iter()
        .map(|n| {
            let src = crate_sources(&n);
            (n, src)
        })
        .collect();
    for s in StreamName::families() {
        let v = variant(s);
        match s.trim_owner() {
            TrimOwner::Daemon { kind, key } => {
                let section = kind.name();
                assert!(
                    documented_keys(section).iter().any(|k| k == key),
                    "{s}: its bound `{key}` is not a documented key of [{section}] in \
                     config/default.toml"
                );
                let src = crate_sources(&format!("kitbash-{section}"));
                assert!(
                    src.contains(&format!(".{key}")),
                    "{s}: kitbash-{section} never reads its bound `{key}`"
                );
                if s.partitioned_by().is_none() {
                    // Trimmed by the daemon's bounds task (the partitions by their workers,
                    // with the bound handed over in the partition spec).
                    assert!(
                        src.contains(&format!(".trim(StreamName::{v}, ")),
                        "{s}: kitbash-{section} does not trim it (`Bounds::trim(StreamName::{v}, …)`)"
                    );
                }
            }
            TrimOwner::Exempt(why) => {
                // Exempt because nothing writes it: the day a library starts to, it needs an
                // owner.
                for (name, src) in &libraries {
                    assert!(
                        !names_variant(src, &v),
                        "{s} is exempt from trimming ({why}), but {name} uses it: give it a \
                         trim owner in StreamName::trim_owner"
                    );
                }
            }
        }
    }
}

#[test]
fn no_stream_is_capped_by_xadd_maxlen() {
    // Work streams are trimmed only by `trim::safe_trim` (which honours the groups); dead-letter
    // streams not at all. Allowed: a document's timeline (a per-document history, not a
    // stream any group reads) and `kitbash bench` (redis-benchmark's own keys).
    for p in sources() {
        let path = p.display().to_string();
        if path.contains("/tests/") || path.contains("tidy.rs") || path.contains("/src/bench/") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || !code.contains("MAXLEN") {
                continue;
            }
            // The commit and settle scripts' timeline append (`kt`, the document's timeline key).
            let timeline = path.ends_with("kitbash-entity/src/store.rs")
                && code.contains("'XADD', kt, 'MAXLEN'");
            assert!(
                timeline,
                "{path}:{}: a stream capped with MAXLEN (use trim::safe_trim, see \
                 StreamName::trim_owner)",
                i + 1
            );
        }
    }
}
