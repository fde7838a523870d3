//! A daemon binary's command line: `--help` (what it does, its configuration section with every
//! key, default and environment variable, the shared sections, signals and exit codes) and
//! `--version`, answered before any configuration is loaded or any connection is opened.
//! Daemons take no other arguments: everything else is configuration.

use std::process::ExitCode;

use kitbash_schema::DaemonKind;

/// `config/default.toml` as built: the help lists each key with its comment from there, so the
/// help and the documented defaults cannot drift apart.
const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Sections every daemon reads besides its own.
const SHARED_SECTIONS: &[&str] = &["redis", "telemetry", "admin", "consumer", "fleet"];

/// Handles `--help` / `-h` and `--version` / `-V`. Returns the exit code when the process should
/// stop here (help or version printed: 0; an unknown argument: 2, as clap does), `None` when the
/// daemon should start.
pub fn handle(kind: DaemonKind) -> Option<ExitCode> {
    let bin = format!("kitbash-{}", kind.name());
    let cmd = command(kind, &bin);
    match cmd.try_get_matches_from(std::env::args_os()) {
        Ok(_) => None,
        Err(e) => {
            let _ = e.print();
            Some(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)))
        }
    }
}

/// The clap command of a daemon binary (no arguments but `--help` and `--version`).
pub fn command(kind: DaemonKind, bin: &str) -> clap::Command {
    let about = kind.about();
    clap::Command::new("kitbash-daemon")
        .bin_name(bin.to_owned())
        .display_name(bin.to_owned())
        .version(env!("CARGO_PKG_VERSION"))
        .about(wrap(&format!("{bin}: {about}."), 78))
        .after_help(help_text(kind))
}

/// The part of `--help` after the usage: configuration, environment, signals, exit codes.
pub fn help_text(kind: DaemonKind) -> String {
    use std::fmt::Write as _;
    let sections = parse_sections(DEFAULT_TOML);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        wrap(
            "Configuration, in layers: $KITBASH_CONFIG_DIR/default.toml (default ./config), \
             then $KITBASH_CONFIG_DIR/$KITBASH_PROFILE.toml, then environment variables \
             KITBASH__SECTION__KEY. Unknown keys are refused; a bad value stops start-up with \
             one line naming the key (exit 64).",
            78
        )
    );
    let name = kind.name();
    let _ = writeln!(out, "\nIts section [{name}]:");
    match sections.iter().find(|s| s.name == name) {
        Some(s) if !s.keys.is_empty() => {
            for k in &s.keys {
                let _ = writeln!(
                    out,
                    "  {} = {}    env {}",
                    k.key,
                    k.default,
                    env_var(name, &k.key)
                );
                if !k.comment.is_empty() {
                    for line in wrap(&k.comment.join(" "), 74).lines() {
                        let _ = writeln!(out, "    {line}");
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "  (no settings of its own yet)");
        }
    }
    let _ = writeln!(
        out,
        "\nShared sections (every daemon reads them; see config/default.toml):"
    );
    for shared in SHARED_SECTIONS {
        let keys: Vec<String> = sections
            .iter()
            .find(|s| s.name == *shared)
            .map(|s| {
                s.keys
                    .iter()
                    .map(|k| format!("{} = {}", k.key, k.default))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  [{shared}]  env KITBASH__{}__<KEY>",
            shared.to_uppercase()
        );
        for line in wrap_items(&keys, 72) {
            let _ = writeln!(out, "      {line}");
        }
    }
    let _ = writeln!(
        out,
        "\nEnvironment:\n  \
         KITBASH_CONFIG_DIR     where default.toml and profiles are (default ./config)\n  \
         KITBASH_PROFILE        a profile: also read $KITBASH_PROFILE.toml there\n  \
         KITBASH__SECTION__KEY  any key, e.g. KITBASH__REDIS__URL=redis://10.0.0.5:6379\n  \
         KITBASH__REDIS__USERNAME, KITBASH__REDIS__PASSWORD or KITBASH__REDIS__PASSWORD_FILE\n  \
                                its Redis ACL user (`kitbash acl` prints one per daemon kind)\n  \
         NOTIFY_SOCKET, WATCHDOG_USEC  set by systemd (Type=notify): READY=1, WATCHDOG=1,\n  \
                                STOPPING=1 are sent there\n  \
         RUST_LOG               log filter; overrides [telemetry] level"
    );
    for para in [
        "Signals: SIGTERM/SIGINT stop reading, finish and acknowledge the batch in hand and \
         exit within [consumer] grace_ms (a second one exits at once); SIGHUP re-reads the \
         configuration and applies [telemetry] level.",
        "Exit codes: 0 clean stop, 64 bad configuration, 1 anything else.",
        "Admin endpoint: /healthz, /readyz and /metrics on [admin] listen (its address is in \
         `kitbash status`).",
    ] {
        let _ = writeln!(out, "\n{}", wrap(para, 78));
    }
    out
}

/// `KITBASH__FEYNMAN__LEASE_MS` for (`feynman`, `lease_ms`).
pub fn env_var(section: &str, key: &str) -> String {
    format!(
        "KITBASH__{}__{}",
        section.to_uppercase(),
        key.to_uppercase()
    )
}

/// One `[section]` of the documented defaults.
#[derive(Debug, PartialEq)]
struct TomlSection {
    name: String,
    keys: Vec<TomlKey>,
}

/// One `key = value` line and the comment lines just above it.
#[derive(Debug, PartialEq)]
struct TomlKey {
    key: String,
    default: String,
    comment: Vec<String>,
}

/// Reads the flat layout of `config/default.toml`: `[section]` headers, `# comment` lines, and
/// `key = value` lines. Not a TOML parser: the file is ours and stays this simple.
fn parse_sections(text: &str) -> Vec<TomlSection> {
    let mut sections: Vec<TomlSection> = Vec::new();
    let mut comment: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            comment.clear();
        } else if let Some(c) = line.strip_prefix('#') {
            comment.push(c.trim().to_owned());
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(TomlSection {
                name: name.trim().to_owned(),
                keys: Vec::new(),
            });
            comment.clear();
        } else if let Some((k, v)) = line.split_once('=')
            && let Some(section) = sections.last_mut()
        {
            section.keys.push(TomlKey {
                key: k.trim().to_owned(),
                default: v.trim().to_owned(),
                comment: std::mem::take(&mut comment),
            });
        }
    }
    sections
}

/// Joins `items` with `", "` into lines of at most `width` columns, never splitting an item.
fn wrap_items(items: &[String], width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for item in items {
        if !line.is_empty() && line.chars().count() + 2 + item.chars().count() > width {
            line.push(',');
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(item);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Wraps a paragraph at word boundaries.
fn wrap(text: &str, width: usize) -> String {
    let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let mut out = Vec::new();
    let mut line = String::new();
    for w in words {
        if !line.is_empty() && line.chars().count() + 1 + w.chars().count() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&w);
    }
    out.push(line);
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_parse_into_sections_with_comments() {
        let s = parse_sections(DEFAULT_TOML);
        let feynman = s.iter().find(|s| s.name == "feynman").expect("[feynman]");
        let partitions = feynman
            .keys
            .iter()
            .find(|k| k.key == "partitions")
            .expect("partitions");
        assert_eq!(partitions.default, "8");
        assert!(
            partitions.comment.join(" ").contains("Tick partitions"),
            "{partitions:?}"
        );
        for shared in SHARED_SECTIONS {
            assert!(s.iter().any(|x| x.name == *shared), "[{shared}] documented");
        }
    }

    #[test]
    fn a_daemon_help_lists_its_section_and_environment() {
        let help = help_text(DaemonKind::Feynman);
        assert!(help.contains("[feynman]"), "{help}");
        assert!(help.contains("KITBASH__FEYNMAN__LEASE_MS"), "{help}");
        assert!(help.contains("KITBASH__REDIS__<KEY>"), "{help}");
        assert!(help.contains("KITBASH_PROFILE"), "{help}");
        // credentials and TLS are documented keys of [redis], listed from default.toml
        for key in ["username", "password_file", "tls_ca_file", "tls_cert_file"] {
            assert!(help.contains(key), "{key} in {help}");
        }
        assert!(help.contains("KITBASH__REDIS__PASSWORD_FILE"), "{help}");
        assert!(help.contains("NOTIFY_SOCKET"), "{help}");
        let bridge = help_text(DaemonKind::Bridge);
        assert!(bridge.contains("Its section [bridge]:"), "{bridge}");
        assert!(bridge.contains("KITBASH__BRIDGE__RECOVER_MAX"), "{bridge}");
    }

    #[test]
    fn help_and_version_exit_zero_and_other_arguments_are_refused() {
        let cmd = || command(DaemonKind::Feynman, "kitbash-feynman");
        for ok in [
            ["kitbash-feynman", "--help"],
            ["kitbash-feynman", "--version"],
        ] {
            let e = cmd()
                .try_get_matches_from(ok)
                .expect_err("prints and stops");
            assert_eq!(e.exit_code(), 0, "{ok:?}");
        }
        assert!(cmd().try_get_matches_from(["kitbash-feynman"]).is_ok());
        let e = cmd()
            .try_get_matches_from(["kitbash-feynman", "--bogus"])
            .expect_err("unknown flag");
        assert_eq!(e.exit_code(), 2);
    }
}
