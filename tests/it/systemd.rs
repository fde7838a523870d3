//! The systemd units in `deploy/systemd`: one `Type=notify` template per daemon kind with a
//! watchdog and the hardening options, accepted by `systemd-analyze verify` (their `ExecStart`
//! pointed at the binaries just built, since the installed paths do not exist here).

use std::path::{Path, PathBuf};
use std::process::Command;

use kitbash_e2e::bin_dir;
use kitbash_schema::DaemonKind;

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd")
}

fn unit(kind: DaemonKind) -> (PathBuf, String) {
    let path = systemd_dir().join(format!("kitbash-{}@.service", kind.name()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

#[test]
fn every_daemon_kind_has_a_notify_unit_with_a_watchdog_and_its_hardening() {
    for kind in DaemonKind::ALL {
        let (path, text) = unit(kind);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let has = |l: &str| lines.contains(&l);
        let p = path.display();
        assert!(has("Type=notify"), "{p}: Type=notify");
        assert!(has("NotifyAccess=main"), "{p}: NotifyAccess=main");
        assert!(
            lines.iter().any(|l| l.starts_with("WatchdogSec=")),
            "{p}: WatchdogSec="
        );
        assert!(
            has(&format!("ExecStart=/usr/local/bin/kitbash-{}", kind.name())),
            "{p}: ExecStart"
        );
        // The malloc setting every launcher gives the daemons, spelled as the runtime spells it.
        let tunables = format!(
            "Environment=GLIBC_TUNABLES={}",
            kitbash_runtime::daemon::GLIBC_TUNABLES
        );
        assert!(has(&tunables), "{p}: {tunables}");
        for hardening in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
            "SystemCallFilter=@system-service",
            // the notify socket is a Unix socket
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "RestartPreventExitStatus=64",
        ] {
            assert!(has(hardening), "{p}: {hardening}");
        }
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        // Declared in tests/deps/apt.txt (package systemd, test-only), so CI has it.
        println!(
            "SKIPPED: systemd-analyze is not installed (apt-get install -y systemd, or \
             tests/deps/install apt-test); the units were not verified"
        );
        return;
    };
    assert!(out.status.success(), "systemd-analyze --version failed");
    let dir = tempfile::Builder::new()
        .prefix("kitbash-e2e-units-")
        .tempdir()
        .expect("temp dir");
    let mut names = vec!["kitbash.target".to_owned()];
    std::fs::copy(
        systemd_dir().join("kitbash.target"),
        dir.path().join("kitbash.target"),
    )
    .expect("copy target");
    for kind in DaemonKind::ALL {
        let (path, text) = unit(kind);
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let built = bin_dir().join(format!("kitbash-{}", kind.name()));
        assert!(built.exists(), "{} is not built", built.display());
        let text = text.replace(
            &format!("ExecStart=/usr/local/bin/kitbash-{}", kind.name()),
            &format!("ExecStart={}", built.display()),
        );
        std::fs::write(dir.path().join(&name), text).expect("write unit");
        // Templates are verified through an instance.
        names.push(name.replace("@.service", "@1.service"));
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&names)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It exits 0 on some problems (an unknown Type= is "ignored"): any line about our units is
    // a failure too.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("kitbash")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn the_container_image_gives_the_daemons_the_runtimes_malloc_setting() {
    let path = systemd_dir().join("../container/Containerfile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want = format!("GLIBC_TUNABLES={}", kitbash_runtime::daemon::GLIBC_TUNABLES);
    assert!(
        text.lines()
            .any(|l| l.trim().trim_end_matches('\\').trim() == want),
        "{}: an ENV line {want}",
        path.display()
    );
}
