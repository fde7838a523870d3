//! `python3` with the test dependencies of `tests/deps/requirements.txt` importable, for tests
//! that read kitbash's Redis layout from another language.
//!
//! The packages live in the workspace's `.kitbash/python` (installed by `just deps`, which
//! `just test` and `.ci/run` run), never in the system Python. A test asks for the modules it
//! imports; when one is missing it fails (never skips) with the command that installs it.

use std::path::PathBuf;
use std::process::Command;

/// The private directory `tests/deps/install python` installs into.
pub fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.kitbash/python")
}

/// A `python3` command whose `PYTHONPATH` starts with [`python_dir`]. Panics, naming the install
/// command, when python3 is absent or any of `modules` does not import.
pub fn python3(modules: &[&str]) -> Command {
    let dir = python_dir();
    let path = match std::env::var_os("PYTHONPATH") {
        Some(p) if !p.is_empty() => {
            let mut s = dir.clone().into_os_string();
            s.push(":");
            s.push(p);
            s
        }
        _ => dir.into_os_string(),
    };
    let cmd = || {
        let mut c = Command::new("python3");
        c.env("PYTHONPATH", &path);
        c
    };
    if !modules.is_empty() {
        let import = format!("import {}", modules.join(", "));
        let ok = cmd()
            .args(["-c", &import])
            .output()
            .map(|o| o.status.success());
        match ok {
            Ok(true) => {}
            Ok(false) => panic!(
                "this test needs the Python modules {modules:?} (tests/deps/requirements.txt): \
                 run `just deps` (or `tests/deps/install python`) from the workspace root"
            ),
            Err(e) => panic!(
                "this test needs python3 ({e}): `apt-get install -y python3 python3-pip`, then `just deps`"
            ),
        }
    }
    cmd()
}
