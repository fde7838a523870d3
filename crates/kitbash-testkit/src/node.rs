//! `node` with the test dependencies of `tests/deps/package.json` loadable (`require`), for
//! tests that drive a JavaScript client (the bridge's Centrifugo SDK test).
//!
//! The packages live in the workspace's `.kitbash/node/node_modules` (installed by `just deps`,
//! which `just test` and `.ci/run` run). A test names the packages it requires; when one is
//! missing it fails (never skips) with the command that installs it.

use std::path::PathBuf;
use std::process::Command;

/// The `node_modules` directory `tests/deps/install node` installs into.
pub fn node_modules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.kitbash/node/node_modules")
}

/// A `node` command whose `NODE_PATH` is [`node_modules`]. Panics, naming the install command,
/// when node is absent or any of `packages` does not load.
pub fn node(packages: &[&str]) -> Command {
    let dir = node_modules();
    let cmd = || {
        let mut c = Command::new("node");
        c.env("NODE_PATH", &dir);
        c
    };
    if !packages.is_empty() {
        let load: String = packages
            .iter()
            .map(|p| format!("require({p:?});"))
            .collect();
        match cmd()
            .args(["-e", &load])
            .output()
            .map(|o| o.status.success())
        {
            Ok(true) => {}
            Ok(false) => panic!(
                "this test needs the Node packages {packages:?} (tests/deps/package.json): \
                 run `just deps` (or `tests/deps/install node`) from the workspace root"
            ),
            Err(e) => panic!(
                "this test needs node ({e}): `apt-get install -y nodejs npm`, then `just deps`"
            ),
        }
    }
    cmd()
}
