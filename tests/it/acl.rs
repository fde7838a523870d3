//! The fleet under the ACL file `kitbash acl` generates: every daemon binary logs in as its own
//! user and does its normal work with no ACL denial logged, the CLI works as the admin and the
//! application user, and each user is refused (`NOPERM`) a command, a key and a channel
//! outside its rights.

use std::process::{Child, Stdio};

use kitbash_e2e::*;
use kitbash_schema::acl::Role;
use kitbash_schema::{DaemonKind, Keys, Namespace, StreamName};
use kitbash_testkit::{RedisCluster, RedisServer, RespConnection, RespValue};

/// The roles with a password in these tests, and their passwords.
fn passwords() -> Vec<(Role, String)> {
    Role::all()
        .into_iter()
        .map(|r| {
            let pw = format!("pw-{}-{:08x}", r.slug(), rand_u32());
            (r, pw)
        })
        .collect()
}

fn rand_u32() -> u32 {
    // Enough for passwords nobody guesses in a test; no extra crate.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    t ^ std::process::id().rotate_left(16)
}

/// `kitbash acl` for namespace `ns` with `passwords` in the environment.
/// `url` is the deployment's (`kitbash acl` names the keys its `[redis]` describes: on a
/// cluster the reflex path's are in one slot); nothing connects to it.
fn acl_file(url: &str, ns: &str, passwords: &[(Role, String)]) -> String {
    let mut c = command("kitbash", url, ns);
    c.arg("acl");
    for (role, pw) in passwords {
        c.env(
            format!("KITBASH_ACL_PASSWORD_{}", role.slug().to_uppercase()),
            pw,
        );
    }
    let out = c.output().expect("run kitbash acl");
    assert!(
        out.status.success(),
        "kitbash acl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    for (_, pw) in passwords {
        assert!(
            !text.contains(pw.as_str()),
            "a password is printed in clear"
        );
    }
    text
}

/// The Redis a fleet runs on: one server, or a 3-master cluster with the same ACL file on
/// every node.
enum Redis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    /// The `[redis] url` the fleet is given (`redis-cluster://…` for a cluster).
    fn url(&self) -> String {
        match self {
            Self::Server(s) => s.url(),
            Self::Cluster(c) => c.cluster_url(),
        }
    }

    /// Every node (a cluster's primaries).
    fn nodes(&self) -> &[RedisServer] {
        match self {
            Self::Server(s) => std::slice::from_ref(s),
            Self::Cluster(c) => c.nodes(),
        }
    }

    /// The first node's port (a login that stays on one node).
    fn port(&self) -> u16 {
        self.nodes()[0].port()
    }

    /// One command as the default user (following `MOVED` on a cluster), its reply as text.
    fn cmd(&self, args: &[&str]) -> kitbash_testkit::Result<String> {
        match self {
            Self::Server(s) => s.cmd(args),
            Self::Cluster(c) => c.cmd(args),
        }
    }
}

struct Fleet {
    server: Redis,
    ns: String,
    passwords: Vec<(Role, String)>,
}

impl Fleet {
    fn start() -> Self {
        Self::start_with("redis://127.0.0.1:1", |text| {
            Redis::Server(
                RedisServer::builder()
                    .acl_file(text)
                    .start()
                    .expect("redis with the generated ACL file"),
            )
        })
    }

    /// The same users on a 3-master Redis Cluster.
    fn start_cluster() -> Self {
        Self::start_with("redis-cluster://127.0.0.1:1", |text| {
            Redis::Cluster(
                RedisCluster::builder()
                    .acl_file(text)
                    .start()
                    .expect("a cluster with the generated ACL file on every node"),
            )
        })
    }

    /// The generated file for a deployment at `url` (its shape, not its address), loaded into
    /// the Redis `backend` starts.
    fn start_with(url: &str, backend: impl FnOnce(String) -> Redis) -> Self {
        let ns = kitbash_testkit::namespace();
        let passwords = passwords();
        let text = acl_file(url, &ns, &passwords);
        Self {
            server: backend(text),
            ns,
            passwords,
        }
    }

    fn user(&self, role: Role) -> (String, String) {
        let ns = Namespace::new(self.ns.clone()).expect("ns");
        let pw = self
            .passwords
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.clone())
            .expect("password");
        (role.user_name(&ns), pw)
    }

    /// A command of the workspace logged in as `role` through `[redis] username` / `password`.
    fn command_as(&self, name: &str, role: Role) -> std::process::Command {
        let (user, pw) = self.user(role);
        let mut c = command(name, &self.server.url(), &self.ns);
        c.env("KITBASH__REDIS__USERNAME", user)
            .env("KITBASH__REDIS__PASSWORD", pw);
        c
    }

    fn login(&self, role: Role) -> RespConnection {
        self.login_on(self.server.port(), role)
    }

    /// A connection to the node on `port`, logged in as `role`.
    fn login_on(&self, port: u16, role: Role) -> RespConnection {
        let (user, pw) = self.user(role);
        let mut c =
            RespConnection::connect(port, std::time::Duration::from_secs(5)).expect("connect");
        c.command(&["AUTH", &user, &pw]).expect("AUTH");
        c
    }

    fn keys(&self) -> Keys {
        Keys::new(Namespace::new(self.ns.clone()).expect("ns"))
            .with_reflex_slot(matches!(self.server, Redis::Cluster(_)))
    }

    /// Every entry of `ACL LOG` of every node (as the default user), as text.
    fn acl_log(&self) -> Vec<String> {
        self.server.nodes().iter().flat_map(acl_log_of).collect()
    }
}

/// Every entry of `ACL LOG` of one server (as the default user), as text.
fn acl_log_of(server: &RedisServer) -> Vec<String> {
    let mut c = server.connect().expect("connect");
    match c.command(&["ACL", "LOG"]).expect("ACL LOG") {
        RespValue::Array(entries) => entries
            .iter()
            .map(|e| match e {
                RespValue::Array(fields) => fields
                    .chunks(2)
                    .filter_map(|kv| {
                        let k = kv[0].as_text()?;
                        let v = match &kv[1] {
                            RespValue::Integer(n) => n.to_string(),
                            other => other.as_text().unwrap_or_default(),
                        };
                        // client-info is long: its command is what matters
                        let v = if k == "client-info" {
                            v.split(' ')
                                .filter(|f| f.starts_with("cmd="))
                                .collect::<Vec<_>>()
                                .join(" ")
                        } else {
                            v
                        };
                        Some(format!("{k}={v}"))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                other => format!("{other:?}"),
            })
            .collect(),
        other => panic!("ACL LOG replied {other:?}"),
    }
}

/// The daemons of a test; dropping it (a failed assertion too) kills those still running, so
/// a failing test leaves no process behind.
struct Daemons(Vec<(DaemonKind, Child)>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn spawn(fleet: &Fleet, kind: DaemonKind, dir: &std::path::Path) -> Child {
    let name = format!("kitbash-{}", kind.name());
    let mut c = fleet.command_as(&name, Role::Daemon(kind));
    // The archive reads its password from a file, as a systemd credential or a mounted
    // secret would give it (the others from the environment).
    if kind == DaemonKind::Archive {
        let (_, pw) = fleet.user(Role::Daemon(kind));
        let file = dir.join("archive.password");
        std::fs::write(&file, format!("{pw}\n")).expect("password file");
        c.env_remove("KITBASH__REDIS__PASSWORD")
            .env("KITBASH__REDIS__PASSWORD_FILE", &file);
    }
    c.env("KITBASH__ADMIN__LISTEN", "127.0.0.1:0")
        .env("KITBASH__BRIDGE__LISTEN", "127.0.0.1:0")
        .env("KITBASH__ARCHIVE__DIR", dir.join("archive"))
        .env("KITBASH__ARCHIVE__ROLL_MS", "200")
        .env("KITBASH__ENTITY__LEASE_MS", "600")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
}

/// Polls `cond` like `eventually`; on the deadline the panic shows the ACL denials and the
/// fleet's status, which say why.
fn wait(fleet: &Fleet, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for: {what}\nACL LOG:\n{}\nstatus: {}",
                fleet.acl_log().join("\n"),
                status(fleet)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn status(fleet: &Fleet) -> serde_json::Value {
    let out = fleet
        .command_as("kitbash", Role::Admin)
        .args(["status", "--json"])
        .output()
        .expect("kitbash status");
    assert!(
        out.status.success(),
        "kitbash status as the admin user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `XINFO GROUPS` of `key` (as the default user): (group name, entries-read) pairs.
fn groups(fleet: &Fleet, key: &str) -> Vec<(String, i64)> {
    fleet
        .server
        .nodes()
        .iter()
        .find_map(|n| groups_on(n, key))
        .unwrap_or_default()
}

/// `XINFO GROUPS` of `key` on `server`; `None` when the key lives on another node (`MOVED`).
fn groups_on(server: &RedisServer, key: &str) -> Option<Vec<(String, i64)>> {
    let mut c = server.connect().expect("connect");
    let groups = match c.command(&["XINFO", "GROUPS", key]) {
        Ok(RespValue::Array(groups)) => groups,
        Err(e) if e.to_string().contains("MOVED") => return None,
        _ => return Some(Vec::new()),
    };
    Some(
        groups
            .iter()
            .filter_map(|g| {
                let RespValue::Array(fields) = g else {
                    return None;
                };
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|kv| kv[0].as_text().as_deref() == Some(name))
                        .map(|kv| kv[1].clone())
                };
                let name = field("name")?.as_text()?;
                let read = match field("entries-read") {
                    Some(RespValue::Integer(n)) => n,
                    _ => 0,
                };
                Some((name, read))
            })
            .collect(),
    )
}

#[test]
fn every_daemon_does_its_work_under_its_own_acl_user() {
    let kinds = DaemonKind::ALL
        .into_iter()
        .chain([DaemonKind::Example])
        .collect::<Vec<_>>();
    fleet_works_under_its_users(&Fleet::start(), &kinds);
}

/// The same on a 3-master Redis Cluster with the generated file on every node (generated for
/// the cluster's URL, so the reflex path's patterns name its slot): fred discovers the nodes
/// with `CLUSTER SLOTS`/`SHARDS` and `READONLY`, which every user is granted; every daemon
/// does its work there, `kitbash status` as the admin sums every primary, and no node logs a
/// denial.
#[test]
fn the_fleet_on_a_cluster_does_its_work_under_its_acl_users() {
    let kinds = DaemonKind::ALL
        .into_iter()
        .chain([DaemonKind::Example])
        .collect::<Vec<_>>();
    let fleet = Fleet::start_cluster();
    fleet_works_under_its_users(&fleet, &kinds);
    let s = status(&fleet);
    assert_eq!(
        s["redis"]["nodes"], 3,
        "status as the admin visits every primary: {s}"
    );
    // Rights hold on every node: on the node that owns its slot, a key outside feynman's is
    // refused and one of its own is not.
    let k = fleet.keys();
    let on_owner = |args: &[&str]| {
        fleet
            .server
            .nodes()
            .iter()
            .find_map(|n| {
                let mut c = fleet.login_on(n.port(), Role::Daemon(DaemonKind::Feynman));
                match refusal(&mut c, args) {
                    Some(e) if e.contains("MOVED") => None,
                    other => Some(other),
                }
            })
            .expect("some node owns the key")
    };
    let e = on_owner(&["SET", &k.cms("h"), "x"]).expect("feynman may not write cms:h");
    assert!(e.contains("NOPERM"), "{e}");
    assert_eq!(on_owner(&["GET", &k.physics_state("SPY")]), None);
}

/// Starts `kinds` as their own users on `fleet`, feeds them as the application and the
/// operator, waits until each did its work, stops them with SIGTERM and checks that no
/// command of theirs was refused.
fn fleet_works_under_its_users(fleet: &Fleet, kinds: &[DaemonKind]) {
    let dir = tempfile_dir();
    let mut children = Daemons(
        kinds
            .iter()
            .map(|k| (*k, spawn(fleet, *k, dir.path())))
            .collect(),
    );

    // The CLI as the operator (hats) and as the application (ticks, queries, memory tokens).
    for (role, args) in [
        (Role::Admin, vec!["hat", "init"]),
        (
            Role::App,
            vec!["feed", "ticks", "--count", "400", "--symbols", "SPY,QQQ"],
        ),
        (Role::App, vec!["feed", "queries", "--count", "600"]),
        (
            Role::App,
            vec!["feed", "memory", "--count", "200", "--rate", "2000"],
        ),
    ] {
        let out = fleet
            .command_as("kitbash", role)
            .args(&args)
            .output()
            .expect("kitbash");
        assert!(
            out.status.success(),
            "kitbash {args:?} as {role:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // kitbash-client as the application user: entity updates.
    entity_updates(fleet);

    let k = fleet.keys();
    wait(fleet, "every daemon instance is alive and ready", || {
        let s = status(fleet);
        let ready = |kind: DaemonKind| {
            s["daemons"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|x| x["kind"] == kind.name() && x["alive"] == true && x["ready"] == true)
            })
        };
        kinds.iter().all(|k| ready(*k))
    });
    // feynman: physics states written.
    wait(fleet, "feynman wrote physics states", || {
        ["SPY", "QQQ"].iter().all(|s| {
            fleet
                .server
                .cmd(&["EXISTS", &k.physics_state(s)])
                .is_ok_and(|r| r.trim() == "1")
        })
    });
    // entity: the documents committed.
    wait(fleet, "entity applied the updates", || {
        fleet
            .server
            .cmd(&["EXISTS", &k.quantum_status()])
            .is_ok_and(|r| r.trim() == "1")
    });
    // decay: the queries read and their records written; crossings emitted for ghost.
    wait(fleet, "decay consumed the queries", || {
        groups(fleet, &k.stream(StreamName::Queries))
            .iter()
            .any(|(g, read)| g == "decay" && *read >= 600)
    });
    wait(fleet, "ghost consumed the crossings decay emitted", || {
        groups(fleet, &k.stream(StreamName::Crossings))
            .iter()
            .any(|(g, read)| g == "ghost" && *read > 0)
    });
    wait(fleet, "the example daemon counted the queries", || {
        groups(fleet, &k.stream(StreamName::Queries))
            .iter()
            .any(|(g, read)| g == "example" && *read >= 600)
    });
    wait(fleet, "the archive archived the physics stream", || {
        groups(fleet, &k.stream(StreamName::Physics))
            .iter()
            .any(|(g, read)| g == "archive" && *read > 0)
    });
    // archive's indexer: the memory tokens indexed, read back by the application.
    wait(fleet, "the archive indexed the memory tokens", || {
        groups(fleet, &k.stream(StreamName::Memory))
            .iter()
            .any(|(g, read)| g == "index" && *read >= 200)
    });
    wait(
        fleet,
        "kitbash memory top reads them as the application",
        || {
            fleet
                .command_as("kitbash", Role::App)
                .args(["memory", "top", "ada", "--json"])
                .output()
                .is_ok_and(|o| {
                    o.status.success()
                        && serde_json::from_slice::<serde_json::Value>(&o.stdout)
                            .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                })
        },
    );
    wait(fleet, "the bridge holds the physics stream's epoch", || {
        fleet
            .server
            .cmd(&["EXISTS", &k.bridge_epoch(StreamName::Physics)])
            .is_ok_and(|r| r.trim() == "1")
    });

    let denials = fleet.acl_log();
    assert!(
        denials.is_empty(),
        "the fleet's normal work was refused by the ACLs:\n{}",
        denials.join("\n")
    );

    for (_, child) in &children.0 {
        signal(child, "-TERM");
    }
    for (kind, child) in &mut children.0 {
        let status = wait_exit(child);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert_eq!(status.code(), Some(0), "kitbash-{kind} exited: {err}");
    }
    let denials = fleet.acl_log();
    assert!(
        denials.is_empty(),
        "denied while draining:\n{}",
        denials.join("\n")
    );
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kitbash-e2e-acl-")
        .tempdir()
        .expect("temp dir")
}

/// Entity updates through `kitbash-client`'s producer, logged in as the application user with
/// `[redis] username` / `password` (what an application gives `connect_client`).
fn entity_updates(fleet: &Fleet) {
    use kitbash_schema::messages::{EntityTarget, EntityUpdate};
    let (user, pw) = fleet.user(Role::App);
    let cfg = kitbash_runtime::config::RedisConfig {
        url: fleet.server.url(),
        namespace: fleet.ns.clone(),
        username: user,
        password: kitbash_runtime::config::Secret(pw),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client =
            kitbash_runtime::redis::connect_client(&cfg, std::time::Duration::from_secs(10))
                .await
                .expect("the application user logs in");
        let producer = kitbash_client::Producer::new(client, cfg.keys(), 8);
        let partitions = kitbash_runtime::config::EntityConfig::default().partitions;
        for i in 0..5 {
            let u = EntityUpdate::merge(EntityTarget::Status, serde_json::json!({"i": i}));
            producer
                .patch_entity(&u, partitions)
                .await
                .expect("entity update as the application user");
        }
    });
}

/// `Err` text of a command, or `None` when it succeeded.
fn refusal(c: &mut RespConnection, args: &[&str]) -> Option<String> {
    match c.command(args) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

fn assert_noperm(c: &mut RespConnection, who: &str, what: &str, args: &[&str]) {
    let e = refusal(c, args).unwrap_or_else(|| panic!("{who}: {what} {args:?} was allowed"));
    assert!(e.contains("NOPERM"), "{who}: {what} {args:?}: {e}");
}

fn assert_allowed(c: &mut RespConnection, who: &str, args: &[&str]) {
    if let Some(e) = refusal(c, args) {
        panic!("{who}: {args:?} should be allowed: {e}");
    }
}

/// `[redis] password_file`: a missing file stops start-up with one line naming it (exit 64, a
/// bad configuration); a file with the wrong password is refused by Redis, and the daemon
/// says so and keeps trying rather than running without Redis.
#[test]
fn a_password_file_that_is_missing_or_wrong_is_named() {
    let fleet = Fleet::start();
    let dir = tempfile_dir();
    let missing = dir.path().join("no-such-file");
    let out = fleet
        .command_as("kitbash-decay", Role::Daemon(DaemonKind::Decay))
        .env_remove("KITBASH__REDIS__PASSWORD")
        .env("KITBASH__REDIS__PASSWORD_FILE", &missing)
        .output()
        .expect("run kitbash-decay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("password_file") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let mut child = fleet
        .command_as("kitbash-decay", Role::Daemon(DaemonKind::Decay))
        .env_remove("KITBASH__REDIS__PASSWORD")
        .env("KITBASH__REDIS__PASSWORD_FILE", &wrong)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kitbash-decay");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // It must still be running (retrying) a few seconds later, not have given up or started.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "kitbash-decay exited with a wrong password instead of retrying"
    );
    signal(&child, "-TERM");
    let status = wait_exit(&mut child);
    let text = reader.join().expect("stderr reader");
    assert!(
        text.contains("WRONGPASS") || text.to_lowercase().contains("auth"),
        "the refusal is named: {text}"
    );
    assert!(status.code().is_some(), "exited on SIGTERM: {status:?}");
}

#[test]
fn each_user_is_refused_a_command_a_key_and_a_channel_outside_its_rights() {
    let fleet = Fleet::start();
    let k = fleet.keys();
    let other_ns = Keys::new(Namespace::new("elsewhere").expect("ns"));
    // Per role: a key it may touch (the login works), a key of another daemon it may not,
    // a channel it may not publish or subscribe to.
    struct Case {
        role: Role,
        allowed: Vec<String>,
        forbidden_key: Vec<String>,
        forbidden_channel: Vec<String>,
    }
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let phys = k.physics_state("SPY");
    let cms = k.cms("h");
    let ghost_key = k.ghost("h");
    let grain = k.grain_sig(1);
    let physics_stream = k.stream(StreamName::Physics);
    let fleet_key = k.fleet();
    let quantum = k.channel_quantum_updates();
    let state = k.channel_state_update();
    let cases = vec![
        Case {
            role: Role::Daemon(DaemonKind::Feynman),
            allowed: s(&["GET", &phys]),
            forbidden_key: s(&["SET", &cms, "x"]),
            forbidden_channel: s(&["PUBLISH", &quantum, "x"]),
        },
        Case {
            role: Role::Daemon(DaemonKind::Entity),
            allowed: s(&["GET", &k.quantum_status()]),
            forbidden_key: s(&["SET", &phys, "x"]),
            forbidden_channel: s(&["PUBLISH", &state, "x"]),
        },
        Case {
            role: Role::Daemon(DaemonKind::Decay),
            allowed: s(&["GET", &k.cms_resonance("h")]),
            forbidden_key: s(&["GET", &phys]),
            forbidden_channel: s(&["SUBSCRIBE", &state]),
        },
        Case {
            role: Role::Daemon(DaemonKind::Ghost),
            allowed: s(&["GET", &ghost_key]),
            // grains are read-only for ghost
            forbidden_key: s(&["HSET", &grain, "weight", "1"]),
            forbidden_channel: s(&["SUBSCRIBE", &quantum]),
        },
        Case {
            role: Role::Daemon(DaemonKind::Bridge),
            allowed: s(&["XLEN", &physics_stream]),
            // the streams it does not back channels with are read-only for the bridge
            forbidden_key: s(&["XADD", &k.stream(StreamName::Queries), "*", "f", "v"]),
            forbidden_channel: s(&["SUBSCRIBE", &state]),
        },
        Case {
            role: Role::Daemon(DaemonKind::Archive),
            allowed: s(&["XLEN", &physics_stream]),
            forbidden_key: s(&["GET", &cms]),
            forbidden_channel: s(&["SUBSCRIBE", &state]),
        },
        Case {
            role: Role::Daemon(DaemonKind::Example),
            allowed: s(&["GET", &k.example_top()]),
            forbidden_key: s(&["GET", &cms]),
            forbidden_channel: s(&["SUBSCRIBE", &state]),
        },
        Case {
            role: Role::App,
            allowed: s(&["GET", &phys]),
            // the fleet's bookkeeping is not the application's
            forbidden_key: s(&["ZADD", &fleet_key, "1", "x"]),
            forbidden_channel: s(&["PUBLISH", &other_ns.channel_state_update(), "x"]),
        },
        Case {
            role: Role::ReadOnly,
            allowed: s(&["GET", &phys]),
            forbidden_key: s(&["GET", &other_ns.physics_state("SPY")]),
            forbidden_channel: s(&["SUBSCRIBE", &other_ns.channel_state_update()]),
        },
        Case {
            role: Role::Admin,
            allowed: s(&["SET", &cms, "x"]),
            forbidden_key: s(&["GET", &other_ns.cms("h")]),
            forbidden_channel: s(&["PUBLISH", &other_ns.channel_state_update(), "x"]),
        },
    ];
    assert_eq!(
        cases.len(),
        Role::all().len(),
        "every role of kitbash_schema::acl has a case here"
    );
    for case in cases {
        let who = format!("{:?}", case.role);
        let mut c = fleet.login(case.role);
        let args = |v: &Vec<String>| v.clone();
        let allowed = args(&case.allowed);
        assert_allowed(
            &mut c,
            &who,
            &allowed.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // Commands: nobody generated here may flush, reconfigure or list every key.
        for cmd in [
            vec!["FLUSHALL"],
            vec!["CONFIG", "SET", "maxmemory", "1"],
            vec!["KEYS", "*"],
        ] {
            assert_noperm(&mut c, &who, "command", &cmd);
        }
        let key = args(&case.forbidden_key);
        assert_noperm(
            &mut c,
            &who,
            "key",
            &key.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let channel = args(&case.forbidden_channel);
        assert_noperm(
            &mut c,
            &who,
            "channel",
            &channel.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // A key of another namespace is refused to every role.
        assert_noperm(&mut c, &who, "namespace", &["GET", &other_ns.fleet()]);
    }
    // A daemon's user cannot act as another daemon: feynman may not write decay's records.
    let mut feynman = fleet.login(Role::Daemon(DaemonKind::Feynman));
    assert_noperm(
        &mut feynman,
        "feynman",
        "key",
        &["XADD", &k.stream(StreamName::Queries), "*", "f", "v"],
    );
    // A wrong password is refused.
    let mut c = RespConnection::connect(fleet.server.port(), std::time::Duration::from_secs(5))
        .expect("connect");
    let (user, _) = fleet.user(Role::Admin);
    let e = refusal(&mut c, &["AUTH", &user, "wrong"]).expect("refused");
    assert!(e.contains("WRONGPASS"), "{e}");
}
