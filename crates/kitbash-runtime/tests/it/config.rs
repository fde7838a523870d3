//! Layered configuration: defaults, files, profiles, and errors that name the key.

use kitbash_runtime::config::{Config, ConfigError, ConfigSource, LogFormat};

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).expect("write");
    }
    dir
}

fn load(files: &[(&str, &str)], profile: Option<&str>) -> Result<Config, ConfigError> {
    let dir = dir_with(files);
    let mut src = ConfigSource::files_only(dir.path());
    src.profile = profile.map(str::to_owned);
    Config::load(&src)
}

#[test]
fn no_files_gives_the_defaults() {
    let cfg = load(&[], None).expect("defaults");
    assert_eq!(cfg.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(cfg.consumer.max_deliveries, 5);
    assert_eq!(cfg.feynman.window, 1000);
}

#[test]
fn profile_overrides_default_file() {
    let cfg = load(
        &[
            (
                "default.toml",
                "[consumer]\nbatch = 50\n[telemetry]\nformat = \"text\"\n",
            ),
            ("production.toml", "[telemetry]\nformat = \"json\"\n"),
        ],
        Some("production"),
    )
    .expect("load");
    assert_eq!(cfg.consumer.batch, 50);
    assert_eq!(cfg.telemetry.format, LogFormat::Json);
}

#[test]
fn the_repository_config_files_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let cfg = Config::load(&ConfigSource::files_only(&root)).expect("config/default.toml loads");
    assert!(cfg.validate().is_ok());
    for entry in std::fs::read_dir(&root).expect("config dir") {
        let path = entry.expect("entry").path();
        if let (Some(stem), Some("toml")) =
            (path.file_stem(), path.extension().and_then(|e| e.to_str()))
        {
            let mut src = ConfigSource::files_only(&root);
            src.profile = Some(stem.to_string_lossy().into_owned());
            Config::load(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[test]
fn unknown_key_is_named() {
    let err = load(&[("default.toml", "[consumer]\nblok_ms = 5\n")], None).expect_err("typo");
    let msg = err.to_string();
    assert!(msg.contains("consumer"), "{msg}");
    assert!(msg.contains("blok_ms"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn wrong_type_is_named() {
    let err = load(&[("default.toml", "[consumer]\nbatch = \"lots\"\n")], None).expect_err("type");
    assert!(err.to_string().contains("consumer.batch"), "{err}");
}

#[test]
fn out_of_range_values_are_named() {
    let err = load(&[("default.toml", "[consumer]\nbatch = 0\n")], None).expect_err("range");
    assert!(err.to_string().starts_with("key `consumer.batch`"), "{err}");
    let err = load(&[("default.toml", "[redis]\nurl = \"http://x\"\n")], None).expect_err("url");
    assert!(err.to_string().starts_with("key `redis.url`"), "{err}");
    let err = load(&[("default.toml", "[redis]\nnamespace = \"a:b\"\n")], None).expect_err("ns");
    assert!(
        err.to_string().starts_with("key `redis.namespace`"),
        "{err}"
    );
    let err =
        load(&[("default.toml", "[admin]\nlisten = \"nowhere\"\n")], None).expect_err("listen");
    assert!(err.to_string().starts_with("key `admin.listen`"), "{err}");
}

#[test]
fn the_removed_dead_letter_cap_points_to_the_alarm() {
    let err = load(
        &[("default.toml", "[consumer]\ndead_letter_max = 5\n")],
        None,
    )
    .expect_err("removed key");
    let msg = err.to_string();
    assert!(msg.starts_with("key `consumer.dead_letter_max`"), "{msg}");
    assert!(msg.contains("dead_letter_alarm"), "{msg}");
    let cfg = load(
        &[("default.toml", "[consumer]\ndead_letter_alarm = 5\n")],
        None,
    )
    .expect("the alarm threshold");
    assert_eq!(cfg.consumer.dead_letter_alarm, 5);
}

#[test]
fn an_idempotency_marker_must_outlive_the_reclaim_of_its_entry() {
    let err = load(
        &[(
            "default.toml",
            "[consumer]\nclaim_idle_ms = 60000\n[ghost]\nmarker_ttl_s = 60\n",
        )],
        None,
    )
    .expect_err("a marker gone before the reclaim");
    assert!(
        err.to_string().starts_with("key `ghost.marker_ttl_s`"),
        "{err}"
    );
}

#[test]
fn unknown_section_is_named() {
    let err = load(&[("default.toml", "[feynmann]\nwindow = 3\n")], None).expect_err("section");
    assert!(err.to_string().contains("feynmann"), "{err}");
}

#[test]
fn missing_profile_file_is_an_error() {
    let err = load(&[], Some("staging")).expect_err("profile");
    assert!(err.to_string().contains("staging"), "{err}");
}

#[test]
fn overrides_apply_last() {
    let dir = dir_with(&[("default.toml", "[redis]\nurl = \"redis://a:1\"\n")]);
    let cfg = Config::load_with(
        &ConfigSource::files_only(dir.path()),
        [("redis.url", "redis://b:2".to_owned())],
    )
    .expect("load");
    assert_eq!(cfg.redis.url, "redis://b:2");
}

#[test]
fn per_stream_consumer_overrides_apply_to_their_stream_only() {
    let toml = "[consumer]\nbatch = 50\nclaim_idle_ms = 9000\n\
                [consumer.streams.queries]\nbatch = 7\nmax_held = 20\n\
                [consumer.streams.\"ticks:3\"]\nclaim_idle_ms = 100\n";
    let cfg = load(&[("default.toml", toml)], None).expect("load");
    let q = cfg.consumer.for_stream("queries");
    assert_eq!((q.batch, q.claim_idle_ms, q.max_held), (7, 9000, 20));
    let t = cfg.consumer.for_stream("ticks:3");
    assert_eq!((t.batch, t.claim_idle_ms), (50, 100));
    let other = cfg.consumer.for_stream("crossings");
    assert_eq!((other.batch, other.claim_idle_ms), (50, 9000));
    assert!(
        other.streams.is_empty(),
        "merged settings carry no overrides"
    );

    let err = load(
        &[("default.toml", "[consumer.streams.queires]\nbatch = 5\n")],
        None,
    )
    .expect_err("typo in the stream name");
    assert!(
        err.to_string()
            .starts_with("key `consumer.streams.queires`"),
        "{err}"
    );
    let err = load(
        &[("default.toml", "[consumer.streams.queries]\nbatch = 0\n")],
        None,
    )
    .expect_err("range");
    assert!(
        err.to_string()
            .starts_with("key `consumer.streams.queries.batch`"),
        "{err}"
    );
    let err = load(
        &[("default.toml", "[consumer.streams.queries]\nbach = 5\n")],
        None,
    )
    .expect_err("unknown key");
    assert!(err.to_string().contains("bach"), "{err}");
}

#[test]
fn the_archive_trims_every_stream_it_archives_with_per_stream_retention() {
    let cfg = load(
        &[(
            "default.toml",
            "[archive]\nstreams = [\"queries\", \"ticks:0\"]\nretention_ms = 1000\n\
             [archive.retention.\"ticks:0\"]\nretention_ms = 5\nretention_entries = 7\n\
             [archive.retention.queries]\ntrim = false\n",
        )],
        None,
    )
    .expect("load");
    use kitbash_schema::StreamName as S;
    assert!(cfg.archive_trims(S::Ticks(0)));
    assert!(!cfg.archive_trims(S::Queries), "per-stream trim = false");
    assert!(!cfg.archive_trims(S::Physics), "not archived");
    let t = cfg.archive.trim_for("ticks:0");
    assert_eq!((t.retention_ms, t.retention_entries), (5, 7));
    assert_eq!(cfg.archive.trim_for("physics").retention_ms, 1000);
    // `streams = []` archives (and trims) every stream of the fleet.
    let all = load(&[], None).expect("defaults");
    assert!(all.archive_trims(S::Physics) && all.archive_trims(S::EntityChanges));
}

#[test]
fn trim_settings_for_a_stream_the_archive_does_not_archive_are_refused() {
    // queries keeps decay as its trimmer: a retention for it would be ignored while decay
    // trims by queries_stream_max — two bounds for one stream.
    let err = load(
        &[(
            "default.toml",
            "[archive]\nstreams = [\"physics\"]\n[archive.retention.queries]\nretention_ms = 5\n",
        )],
        None,
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("archive.retention.queries"), "{err}");
    assert!(err.contains("decay.queries_stream_max"), "{err}");
    // A partition beyond the fleet's count is not archived either.
    let err = load(
        &[(
            "default.toml",
            "[feynman]\npartitions = 2\n[archive.retention.\"ticks:5\"]\nretention_ms = 5\n",
        )],
        None,
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("archive.retention.ticks:5"), "{err}");
    let err = load(
        &[(
            "default.toml",
            "[archive.retention.nope]\nretention_ms = 5\n",
        )],
        None,
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("archive.retention.nope"), "{err}");
}
