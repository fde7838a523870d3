//! Least-privilege Redis ACL users generated from the schema: one user per daemon kind with only
//! its keys (`~` read-write, `%R~` read, `%W~` write), its pub/sub channels (`&`) and an explicit
//! command list, plus an operator (`admin`), a read-only user and an application user for
//! `kitbash-client`'s features. `kitbash acl` renders them as a Redis ACL file.
//!
//! Patterns are built by the [`Keys`] builders themselves with `*` for the variable parts, so
//! they follow the namespace and the key style; the coverage test checks every key builder
//! ([`crate::keys::key_samples`]) against them, so a new key family cannot be forgotten.
//!
//! Passwords are not this crate's business (it does no I/O and hashes nothing): the caller
//! gives each user's password rule to [`render`].

use crate::keys::Keys;
use crate::namespace::Namespace;
use crate::streams::{DaemonKind, StreamName};

/// What a key pattern allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and write (`~pattern`). `XREADGROUP` is a write for ACL purposes, so every stream
    /// a daemon reads through a group is read-write.
    ReadWrite,
    /// Read only (`%R~pattern`).
    Read,
    /// Write only (`%W~pattern`): producers that never read back.
    Write,
}

/// One key pattern of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    /// A Redis glob pattern, namespace included.
    pub pattern: String,
    /// What it allows.
    pub access: Access,
}

impl KeyGrant {
    /// The ACL rule: `~p`, `%R~p` or `%W~p`.
    pub fn rule(&self) -> String {
        match self.access {
            Access::ReadWrite => format!("~{}", self.pattern),
            Access::Read => format!("%R~{}", self.pattern),
            Access::Write => format!("%W~{}", self.pattern),
        }
    }
}

/// Who a user is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A daemon kind's instances.
    Daemon(DaemonKind),
    /// The operator and the CLI (`kitbash status`, `feed`, `grains`, `cache clear`, …): every
    /// key and channel of the namespace, every command but the dangerous ones.
    Admin,
    /// Dashboards and debugging: reads every key of the namespace, subscribes to its channels.
    ReadOnly,
    /// An application using `kitbash-client`: produces to the input streams, reads what the
    /// daemons write, and owns the application families (caches, sessions, rate limits,
    /// arrays, the reflex path's hits and lookups, grains and hats).
    App,
}

impl Role {
    /// Every role, daemons first (the example daemon included: it is the template of a new
    /// daemon, and its user the template of a new user).
    pub fn all() -> Vec<Role> {
        let mut v: Vec<Role> = DaemonKind::ALL.into_iter().map(Role::Daemon).collect();
        v.extend([
            Role::Daemon(DaemonKind::Example),
            Role::Admin,
            Role::ReadOnly,
            Role::App,
        ]);
        v
    }

    /// The short name: the daemon's (`feynman`), `admin`, `readonly`, `app`.
    pub fn slug(self) -> &'static str {
        match self {
            Role::Daemon(k) => k.name(),
            Role::Admin => "admin",
            Role::ReadOnly => "readonly",
            Role::App => "app",
        }
    }

    /// The inverse of [`Role::slug`].
    pub fn parse(slug: &str) -> Option<Role> {
        Role::all().into_iter().find(|r| r.slug() == slug)
    }

    /// The ACL user name: `kitbash-{slug}`, or `kitbash-{namespace}-{slug}` in a namespace
    /// (users are global to a Redis server; two namespaces get two sets of users).
    pub fn user_name(self, ns: &Namespace) -> String {
        if ns.is_none() {
            format!("kitbash-{}", self.slug())
        } else {
            format!("kitbash-{ns}-{}", self.slug())
        }
    }
}

/// One generated ACL user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclUser {
    /// Who it is for.
    pub role: Role,
    /// Its user name ([`Role::user_name`]).
    pub name: String,
    /// Its key patterns.
    pub keys: Vec<KeyGrant>,
    /// Its channel patterns (`&`), for `PUBLISH` and `SUBSCRIBE`.
    pub channels: Vec<String>,
    /// Its commands (`+cmd`, `+cmd|sub`, `+@category`, `-cmd`), after `-@all`.
    pub commands: Vec<String>,
}

impl AclUser {
    /// Whether some pattern lets this user touch `key` at all.
    pub fn covers_key(&self, key: &str) -> bool {
        self.access_to(key).is_some()
    }

    /// Whether this user may read `key` / write `key`: `(read, write)`, `None` when neither.
    pub fn access_to(&self, key: &str) -> Option<(bool, bool)> {
        let mut read = false;
        let mut write = false;
        for g in self.keys.iter().filter(|g| glob_match(&g.pattern, key)) {
            read |= g.access != Access::Write;
            write |= g.access != Access::Read;
        }
        (read || write).then_some((read, write))
    }

    /// Whether a channel pattern lets this user publish or subscribe to `channel`.
    pub fn covers_channel(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| glob_match(p, channel))
    }

    /// The ACL file line, with `password` as the password rule (`#<sha256 hex>`, `><plain>`),
    /// or the user switched `off` when there is none (it cannot log in until one is set).
    pub fn line(&self, password: Option<&str>) -> String {
        let mut rules: Vec<String> = vec!["reset".into()];
        match password {
            Some(p) => {
                rules.push("on".into());
                rules.push(p.to_owned());
            }
            None => rules.push("off".into()),
        }
        rules.extend(self.keys.iter().map(KeyGrant::rule));
        rules.push("resetchannels".into());
        rules.extend(self.channels.iter().map(|c| format!("&{c}")));
        rules.push("-@all".into());
        rules.extend(self.commands.iter().cloned());
        format!("user {} {}", self.name, rules.join(" "))
    }
}

/// The users of a deployment with these keys (namespace and style), in [`Role::all`] order.
pub fn users(keys: &Keys) -> Vec<AclUser> {
    Role::all().into_iter().map(|r| user(keys, r)).collect()
}

/// The user of `role`.
pub fn user(keys: &Keys, role: Role) -> AclUser {
    let p = Patterns { k: keys };
    let mut u = AclUser {
        role,
        name: role.user_name(keys.namespace()),
        keys: Vec::new(),
        channels: Vec::new(),
        commands: Vec::new(),
    };
    match role {
        Role::Daemon(kind) => daemon(&p, kind, &mut u),
        Role::Admin => {
            u.keys.extend(p.everything().into_iter().map(rw));
            u.channels.push(p.every_channel());
            u.commands = words(ADMIN_COMMANDS);
        }
        Role::ReadOnly => {
            u.keys.extend(p.everything().into_iter().map(r));
            u.channels.push(p.every_channel());
            u.commands = words(READ_COMMANDS);
        }
        Role::App => app(&p, &mut u),
    }
    u
}

/// The ACL file: one `user` line per user and nothing else (Redis refuses any other line in an
/// `aclfile`, comments included). `password(user)` gives each user's password rule (`None`:
/// the user is `off`). [`about`] says who each user is for.
pub fn render(users: &[AclUser], mut password: impl FnMut(&AclUser) -> Option<String>) -> String {
    let mut out = String::new();
    for u in users {
        out.push_str(&u.line(password(u).as_deref()));
        out.push('\n');
    }
    out
}

/// Who a role's user is for, in one line.
pub fn about(role: Role) -> &'static str {
    match role {
        Role::Daemon(kind) => kind.about(),
        Role::Admin => {
            "the operator and the kitbash CLI: every key and channel of the namespace, every \
             command but @dangerous ones (server introspection added back)"
        }
        Role::ReadOnly => "reads every key of the namespace and subscribes to its channels",
        Role::App => {
            "applications using kitbash-client: produce input, read results, own the \
             application key families"
        }
    }
}

// ---- commands --------------------------------------------------------------------------------

/// What every daemon's runtime sends: readiness and version probes, the clock, scripts (the
/// commit, lease, trim and de-duplication scripts; `EVALSHA`, loaded on `NOSCRIPT`), the
/// consumer-group loop, dead letters in `MULTI`, heartbeats and leases, the data types the
/// daemons' scripts and readers use; `CLUSTER SLOTS|SHARDS|INFO`, with which fred finds a
/// cluster's nodes and follows a resharding.
const RUNTIME_COMMANDS: &str = "+ping +info +time +client|setname +client|id +select \
    +cluster|slots +cluster|shards +cluster|info +readonly \
    +evalsha +eval +script|load +script|exists +multi +exec +discard +watch +unwatch \
    +xreadgroup +xread +xack +xadd +xautoclaim +xclaim +xpending +xinfo|groups +xinfo|stream \
    +xinfo|consumers +xgroup|create +xgroup|createconsumer +xgroup|delconsumer +xgroup|setid \
    +xtrim +xrange +xrevrange +xlen +xdel \
    +get +set +mget +del +unlink +exists +type +expire +pexpire +ttl +pttl +incr +incrby \
    +hget +hset +hmget +hgetall +hdel +hincrby +hlen +hexists +hkeys +hvals +hscan \
    +zadd +zrem +zrange +zrangebyscore +zrevrange +zrevrangebyscore +zscore +zcard +zincrby \
    +zremrangebyscore +zremrangebyrank +zrank \
    +sadd +srem +smembers +sismember +scard +sscan \
    +lpush +rpush +lpop +rpop +lrange +llen +lindex +ltrim";

/// Pub/sub: publishers (`PUBLISH`) and subscribers.
const PUBLISH_COMMANDS: &str = "+publish";
const SUBSCRIBE_COMMANDS: &str = "+subscribe +unsubscribe +psubscribe +punsubscribe";

/// The application user: what `kitbash-client` sends (producers, readers, the reflex scripts,
/// rate limits, sessions, caches, arrays, family statistics by `SCAN` and `MEMORY USAGE`).
const APP_COMMANDS: &str = "+ping +info +time +client|setname +client|id +select \
    +cluster|slots +cluster|shards +cluster|info +readonly \
    +evalsha +eval +script|load +script|exists +multi +exec +discard +watch +unwatch \
    +xadd +xrange +xrevrange +xlen +xread +xinfo|stream \
    +get +set +setex +psetex +getdel +mget +mset +del +unlink +exists +type +expire +pexpire \
    +ttl +pttl +incr +incrby +incrbyfloat +strlen \
    +hget +hset +hsetnx +hmget +hgetall +hdel +hincrby +hincrbyfloat +hlen +hexists +hkeys \
    +hvals +hscan \
    +zadd +zrem +zrange +zrangebyscore +zrevrange +zrevrangebyscore +zscore +zcard +zcount \
    +zincrby +zremrangebyscore +zremrangebyrank +zrank +zrevrank \
    +sadd +srem +smembers +sismember +scard +sscan \
    +lpush +rpush +lpop +rpop +lrange +llen +lindex +ltrim \
    +scan +memory|usage +publish +subscribe +unsubscribe +psubscribe +punsubscribe";

/// The read-only user: reads of every type, `SCAN`, stream and group inspection, pub/sub.
const READ_COMMANDS: &str = "+ping +info +time +client|setname +client|id +select \
    +cluster|slots +cluster|shards +cluster|info +readonly \
    +get +mget +strlen +getrange +exists +type +ttl +pttl +scan +memory|usage +object|encoding \
    +hget +hmget +hgetall +hlen +hexists +hkeys +hvals +hscan \
    +zrange +zrangebyscore +zrevrange +zrevrangebyscore +zscore +zcard +zcount +zrank \
    +zrevrank +zscan +smembers +sismember +scard +sscan +lrange +llen +lindex \
    +xrange +xrevrange +xlen +xread +xinfo|groups +xinfo|stream +xinfo|consumers +xpending \
    +subscribe +unsubscribe +psubscribe +punsubscribe";

/// The operator: everything but `@dangerous` (no `FLUSHALL`, `CONFIG SET`, `DEBUG`, `ACL`,
/// `SHUTDOWN`, `KEYS`, …: those stay with whoever administers the Redis server itself), with
/// the introspection `kitbash status` and `kitbash keys top` use added back.
const ADMIN_COMMANDS: &str = "+@all -@dangerous +info +config|get +slowlog|get +latency|latest \
    +role +client|list +client|id +client|setname +cluster|info +cluster|nodes +cluster|shards \
    +cluster|slots +object|encoding +memory|usage";

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

// ---- patterns --------------------------------------------------------------------------------

/// A number no key holds, standing for "any id" in builders that take a number.
const ANY_NUMBER: u32 = 918_273_645;

/// Key and channel patterns made by the [`Keys`] builders.
struct Patterns<'a> {
    k: &'a Keys,
}

impl Patterns<'_> {
    /// Every key of the namespace: `*`, or `ns:*` and `{ns:*` (the guards and metadata that
    /// share a key's slot wrap its whole name in a hash tag: `{ns:physics:state:SPY}:src`).
    fn everything(&self) -> Vec<String> {
        let ns = self.k.namespace();
        if ns.is_none() {
            vec!["*".into()]
        } else {
            vec![ns.apply("*"), format!("{{{}", ns.apply("*"))]
        }
    }

    /// Every channel of the namespace: `*` or `ns:*`.
    fn every_channel(&self) -> String {
        self.k.namespace().apply("*")
    }

    /// A builder's key with its number argument as `*`.
    fn num(&self, f: impl Fn(&Keys, u64) -> String) -> String {
        f(self.k, u64::from(ANY_NUMBER)).replace(&ANY_NUMBER.to_string(), "*")
    }

    /// A stream's key and every key beside it (`{s}:dead`, `:done:*`, `:mids:*`,
    /// `:checkpoint`, `:state`, `:trim`): `kitbash:stream:{queries}*`; for a partitioned
    /// family, every partition: `kitbash:stream:{ticks:*}*`.
    fn stream_family(&self, s: StreamName) -> String {
        let any = match s {
            StreamName::Ticks(_) => StreamName::Ticks(ANY_NUMBER),
            StreamName::EntityPart(_) => StreamName::EntityPart(ANY_NUMBER),
            other => other,
        };
        format!("{}*", self.k.stream(any)).replace(&ANY_NUMBER.to_string(), "*")
    }

    /// The lease of a partitioned family, every partition: `kitbash:lease:{ticks:*}`.
    fn leases(&self, s: StreamName) -> String {
        let any = match s {
            StreamName::Ticks(_) => StreamName::Ticks(ANY_NUMBER),
            StreamName::EntityPart(_) => StreamName::EntityPart(ANY_NUMBER),
            other => other,
        };
        self.k.lease(any).replace(&ANY_NUMBER.to_string(), "*")
    }

    /// Every stream and its keys: `kitbash:stream:*`.
    fn all_streams(&self) -> String {
        let q = self.k.stream(StreamName::Queries);
        format!("{}*", q.trim_end_matches("{queries}"))
    }

    /// The documents entity writes, with their metadata and timelines.
    fn documents(&self) -> Vec<String> {
        let k = self.k;
        let docs = [
            k.quantum_status(),
            k.quantum_session_current(),
            k.quantum_daily("*"),
            k.quantum_work_summary24h(),
            k.entity("*", "*"),
        ];
        let mut v = Vec::new();
        for d in docs {
            v.push(k.document_meta(&d));
            v.push(k.document_timeline(&d));
            v.push(d);
        }
        v
    }

    /// The reflex path's records in both layouts (decay writes them; readers read them).
    fn reflex_records(&self) -> Vec<String> {
        let k = self.k;
        vec![
            k.cms("*"),
            k.cms_grains("*"),
            k.cms_resonance("*"),
            self.num(|k, n| k.cms_bucket(n as u32)),
            k.reflex_hot(),
            k.reflex_hot_text(),
            k.cms_sweep(),
            k.resonance_index(),
            k.decay_cycle(),
        ]
    }

    /// The grain bank and the hats (written by the CLI / an application, read by ghost).
    fn grains_and_hats(&self) -> Vec<String> {
        let k = self.k;
        vec![
            self.num(Keys::grain_sig),
            self.num(Keys::grain_bits_plus),
            self.num(Keys::grain_bits_minus),
            k.grain_index(),
            k.hat_current(),
            k.hat_mask("*"),
            k.reflex_version(),
            k.reflex_layout(),
        ]
    }
}

fn rw(pattern: String) -> KeyGrant {
    KeyGrant {
        pattern,
        access: Access::ReadWrite,
    }
}
fn r(pattern: String) -> KeyGrant {
    KeyGrant {
        pattern,
        access: Access::Read,
    }
}
fn w(pattern: String) -> KeyGrant {
    KeyGrant {
        pattern,
        access: Access::Write,
    }
}

fn daemon(p: &Patterns<'_>, kind: DaemonKind, u: &mut AclUser) {
    let k = p.k;
    // Every instance: the fleet register, its own heartbeats and leader leases.
    u.keys.push(rw(k.fleet()));
    u.keys.push(rw(k.heartbeat(kind, "*")));
    u.keys.push(rw(k.leader(kind, "*")));
    u.commands = words(RUNTIME_COMMANDS);
    // The streams this kind reads through a group or a partition lease (read-write: the
    // group read, acknowledgements, dead letters, de-duplication, the owner's trims).
    for s in StreamName::families() {
        let reads = s.partitioned_by() == Some(kind) || s.groups().contains(&kind.group());
        if reads {
            u.keys.push(rw(p.stream_family(s)));
            if s.partitioned_by().is_some() {
                u.keys.push(rw(p.leases(s)));
            }
        }
    }
    let mut publishes = false;
    let mut subscribes = false;
    match kind {
        DaemonKind::Feynman => {
            u.keys.push(rw(p.stream_family(StreamName::Physics)));
            u.keys.push(rw(k.physics_state("*")));
            u.keys.push(rw(k.physics_state_source("*")));
            u.keys.push(rw(k.market_snapshot("*")));
            u.channels.push(k.channel_state_update());
            publishes = true;
        }
        DaemonKind::Entity => {
            u.keys.push(rw(p.stream_family(StreamName::EntityChanges)));
            u.keys.extend(p.documents().into_iter().map(rw));
            u.channels.push(k.channel_quantum_updates());
            publishes = true;
        }
        DaemonKind::Decay => {
            // It writes the crossings (ghost reads and trims them).
            u.keys.push(rw(p.stream_family(StreamName::Crossings)));
            u.keys.extend(p.reflex_records().into_iter().map(rw));
            u.keys.extend(
                [
                    k.decay_clock(),
                    k.latency_histogram(),
                    k.metrics_queries_count(),
                    k.metrics_latency_p95(),
                    k.metrics_latency_p99(),
                    k.reflex_layout(),
                    // Its hits' markers: in the queries stream's family on a standalone
                    // Redis, beside the records on a cluster (`Keys::hit_marker`).
                    k.hit_marker("*"),
                ]
                .map(rw),
            );
        }
        DaemonKind::Ghost => {
            u.keys.push(rw(k.ghost("*")));
            u.keys.push(rw(k.ghost_activations()));
            u.keys.push(rw(k.ghost_recomputed()));
            u.keys.extend(p.grains_and_hats().into_iter().map(r));
            u.keys.extend(p.reflex_records().into_iter().map(r));
            // Its layout check is a script naming the key (declared keys are read-write).
            u.keys.push(rw(k.reflex_layout()));
            u.channels.push(k.channel_grain_updates());
            subscribes = true;
        }
        DaemonKind::Bridge => {
            // It tails streams (no group) and shows the fleet on its dashboard. The streams it
            // backs channels with are named as KEYS of its epoch script, and Redis checks a
            // script's declared keys as read-write (EVAL's key spec): those stream keys, not
            // their families, are `~`.
            u.keys.push(r(p.all_streams()));
            for s in [
                StreamName::Physics,
                StreamName::EntityChanges,
                StreamName::Crossings,
            ] {
                u.keys.push(rw(k.stream(s)));
            }
            u.keys.push(rw(p.num(|k, n| {
                k.bridge_epoch(StreamName::Ticks(n as u32))
                    .replace(&format!("ticks:{n}"), &n.to_string())
            })));
            for other in DaemonKind::ALL.into_iter().chain([DaemonKind::Example]) {
                if other != kind {
                    u.keys.push(r(k.heartbeat(other, "*")));
                }
            }
            u.keys.extend(
                [
                    k.ghost_activations(),
                    k.metrics_latency_p95(),
                    k.metrics_latency_p99(),
                    k.metrics_queries_count(),
                    k.hat_current(),
                    k.reflex_version(),
                    // The fleet view's reflex part: the layout, the decay clock, the hottest
                    // queries (their records and texts) and their ghosts.
                    k.reflex_layout(),
                    k.decay_clock(),
                    k.ghost("*"),
                ]
                .map(r),
            );
            u.keys.extend(p.reflex_records().into_iter().map(r));
        }
        DaemonKind::Archive => {
            // An observer group on every stream, the trim claims, and the manifests' fences.
            u.keys.push(rw(p.all_streams()));
            u.keys.push(rw(p.num(|k, n| {
                k.archive_epoch(StreamName::Ticks(n as u32))
                    .replace(&format!("ticks:{n}"), &n.to_string())
            })));
            // Its memory-token indexer (seed 004): the token cache, the relevance scores and
            // the relevance indexes (per user and per user and context), and on a cluster the
            // guards beside the cache and the scores.
            u.keys.extend(
                [
                    k.memory("*"),
                    k.score("*", "*", "*"),
                    k.memory_user_index("*"),
                    k.memory_context_index("*", "*"),
                    k.memory_source("*"),
                    k.score_source("*", "*", "*"),
                ]
                .map(rw),
            );
        }
        DaemonKind::Example => {
            // It reads the queries through a group of its own (not a processing group), tails
            // entity-changes, and may journal the physics stream through a group.
            u.keys.push(rw(p.stream_family(StreamName::Queries)));
            u.keys.push(r(k.stream(StreamName::EntityChanges)));
            u.keys.push(rw(p.stream_family(StreamName::Physics)));
            u.keys.push(rw(k.example_tally()));
            u.keys.push(rw(k.example_top()));
            u.channels.push(k.channel_grain_updates());
            subscribes = true;
        }
    }
    if publishes {
        u.commands.extend(words(PUBLISH_COMMANDS));
    }
    if subscribes {
        u.commands.extend(words(SUBSCRIBE_COMMANDS));
    }
}

fn app(p: &Patterns<'_>, u: &mut AclUser) {
    let k = p.k;
    // Producers append to the input streams and never read them back.
    for s in [
        StreamName::Ticks(0),
        StreamName::Queries,
        StreamName::Memory,
        StreamName::EntityPart(0),
    ] {
        let family = p.stream_family(s);
        u.keys.push(w(family.trim_end_matches('*').to_owned()));
    }
    // Readers: what the daemons write, and the physics stream (resume from an entry id).
    u.keys.push(r(k.physics_state("*")));
    u.keys.push(r(k.market_snapshot("*")));
    u.keys.push(r(k.stream(StreamName::Physics)));
    u.keys.push(r(k.stream(StreamName::EntityChanges)));
    u.keys.extend(p.documents().into_iter().map(r));
    u.keys.push(r(k.ghost("*")));
    u.keys.push(r(k.resonance_index()));
    u.keys.push(r(k.decay_cycle()));
    // The reflex path: hits and lookups (the lookup counts lookups and cache hits), the
    // seed's metrics, grains and hats (imported by the application or the CLI).
    for key in p.reflex_records() {
        if key != k.resonance_index() && key != k.decay_cycle() {
            u.keys.push(rw(key));
        }
    }
    u.keys.extend(p.grains_and_hats().into_iter().map(rw));
    u.keys.extend(
        [
            k.metrics_queries_count(),
            k.metrics_grains_lookups(),
            k.metrics_cache_hits(),
            k.metrics_latency_p95(),
            k.metrics_latency_p99(),
            k.latency_histogram(),
            k.ghost_activations(),
        ]
        .map(rw),
    );
    // Seeds 001, 003 and 004: the application's own families.
    u.keys.extend(
        [
            k.agent_state("*"),
            k.queue_tasks(),
            k.leaderboard_strategies(),
            k.wm("*"),
            k.spikes_index(),
            p.num(|k, n| k.spikes(n as i64)),
            k.attention("*"),
            k.memory("*"),
            k.score("*", "*", "*"),
            k.session("*"),
            k.rate("*", "*"),
            k.memory_user_index("*"),
            k.memory_context_index("*", "*"),
        ]
        .map(rw),
    );
    u.channels.extend([
        k.channel_state_update(),
        k.channel_trade_signals(),
        k.channel_quantum_updates(),
        k.channel_grain_updates(),
        k.channel_reload(),
    ]);
    u.commands = words(APP_COMMANDS);
}

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[...]` (with `^` and ranges) and `\`
/// escapes; everything else literal. What Redis applies to ACL key and channel patterns.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    glob(pattern.as_bytes(), s.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => {
            let rest = &p[1..];
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'?') => !s.is_empty() && glob(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some((&c, s_rest)) = s.split_first() else {
                return false;
            };
            let mut i = 1;
            let negate = p.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            while i < p.len() && p[i] != b']' {
                if p[i] == b'\\' && i + 1 < p.len() {
                    matched |= p[i + 1] == c;
                    i += 2;
                } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                    let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                    matched |= (lo..=hi).contains(&c);
                    i += 3;
                } else {
                    matched |= p[i] == c;
                    i += 1;
                }
            }
            let after = if i < p.len() { i + 1 } else { i };
            matched != negate && glob(&p[after..], s_rest)
        }
        Some(b'\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyStyle, channel_samples, key_samples};

    /// Builders only the operator (the admin user's `~*`) touches, and why.
    const ADMIN_ONLY: [(&str, &str); 1] = [(
        "bench",
        "`kitbash bench` scratch keys: the CLI runs benchmarks as the operator",
    )];

    fn deployments() -> Vec<Keys> {
        let mut v = Vec::new();
        for ns in ["", "t7", "prod-eu.1"] {
            for style in [KeyStyle::Seed, KeyStyle::Tagged] {
                let ns = Namespace::new(ns).unwrap_or_default();
                v.push(Keys::new(ns.clone()).with_style(style));
                // A cluster deployment: the reflex path in the crossings stream's slot.
                v.push(Keys::new(ns).with_style(style).with_reflex_slot(true));
            }
        }
        v
    }

    #[test]
    fn every_key_is_covered_by_a_user_other_than_the_admin() {
        for k in deployments() {
            let users = users(&k);
            for (builder, key) in key_samples(&k) {
                let by: Vec<&str> = users
                    .iter()
                    .filter(|u| u.role != Role::Admin && u.covers_key(&key))
                    .map(|u| u.role.slug())
                    .collect();
                let admin_only = ADMIN_ONLY.iter().any(|(b, _)| *b == builder);
                let others: Vec<&str> = by.iter().copied().filter(|s| *s != "readonly").collect();
                assert!(
                    admin_only || !others.is_empty(),
                    "{builder} ({key}, namespace {:?}, {:?}) is covered by no daemon or app \
                     user: grant it in kitbash_schema::acl",
                    k.namespace().as_str(),
                    k.style()
                );
                let admin = users.iter().find(|u| u.role == Role::Admin).expect("admin");
                assert!(admin.covers_key(&key), "admin covers {key}");
                let ro = users.iter().find(|u| u.role == Role::ReadOnly).expect("ro");
                assert_eq!(
                    ro.access_to(&key),
                    Some((true, false)),
                    "readonly reads {key}"
                );
            }
            for (builder, channel) in channel_samples(&k) {
                assert!(
                    users
                        .iter()
                        .any(|u| u.role != Role::Admin && u.covers_channel(&channel)),
                    "{builder} ({channel}) is covered by no user's & patterns"
                );
            }
        }
    }

    #[test]
    fn patterns_stay_inside_the_namespace() {
        let k = Keys::new(Namespace::new("t7").unwrap_or_default());
        for u in users(&k) {
            for g in &u.keys {
                // `{t7:physics:state:*}:src`: a key's guard tags the key's whole name.
                let inside = g.pattern.trim_start_matches('{');
                assert!(inside.starts_with("t7:"), "{}: {}", u.name, g.pattern);
            }
            for c in &u.channels {
                assert!(c.starts_with("t7:"), "{}: {c}", u.name);
            }
            assert!(u.name.starts_with("kitbash-t7-"), "{}", u.name);
            // Nothing of namespace t7 reaches a key of another namespace or none.
            for outside in ["cms:h", "t8:cms:h", "physics:state:SPY", "kitbash:fleet"] {
                assert!(!u.covers_key(outside), "{} covers {outside}", u.name);
            }
        }
    }

    fn user_of(k: &Keys, kind: DaemonKind) -> AclUser {
        user(k, Role::Daemon(kind))
    }

    #[test]
    fn each_daemon_reaches_only_its_own_families() {
        let k = Keys::default();
        let user = |kind| user(&k, Role::Daemon(kind));
        let feynman = user(DaemonKind::Feynman);
        assert!(feynman.covers_key(&k.stream(StreamName::Ticks(7))));
        assert!(feynman.covers_key(&k.partition_checkpoint(7)));
        assert!(feynman.covers_key(&k.partition_lease(7)));
        assert!(!feynman.covers_key(&k.cms("h")));
        assert!(!feynman.covers_key(&k.stream(StreamName::Queries)));
        assert!(!feynman.covers_key(&k.heartbeat(DaemonKind::Decay, "i")));
        assert!(feynman.covers_channel(&k.channel_state_update()));
        assert!(!feynman.covers_channel(&k.channel_quantum_updates()));
        // Decay writes its hits' markers and the reflex path in both deployment shapes.
        for k in [Keys::default(), Keys::default().with_reflex_slot(true)] {
            let decay = user_of(&k, DaemonKind::Decay);
            for key in [
                k.hit_marker("1-0"),
                k.cms("h"),
                k.decay_cycle(),
                k.leader(DaemonKind::Decay, "decay-cycle"),
                k.stream(StreamName::Crossings),
            ] {
                assert_eq!(decay.access_to(&key), Some((true, true)), "{key}");
            }
            let ghost = user_of(&k, DaemonKind::Ghost);
            assert_eq!(ghost.access_to(&k.ghost("h")), Some((true, true)));
            assert_eq!(
                ghost.access_to(&k.leader(DaemonKind::Ghost, "ghost-recompute")),
                Some((true, true))
            );
            assert_eq!(ghost.access_to(&k.grain_sig(3)), Some((true, false)));
        }
        let ghost = user(DaemonKind::Ghost);
        assert_eq!(ghost.access_to(&k.grain_sig(3)), Some((true, false)));
        assert_eq!(ghost.access_to(&k.ghost("h")), Some((true, true)));
        assert!(!ghost.covers_key(&k.session("u")));
        let bridge = user(DaemonKind::Bridge);
        // read-only but for the stream keys its epoch script names (declared keys are RW)
        assert_eq!(
            bridge.access_to(&k.stream(StreamName::Queries)),
            Some((true, false))
        );
        assert_eq!(
            bridge.access_to(&k.dead_letter(StreamName::Physics)),
            Some((true, false))
        );
        assert_eq!(
            bridge.access_to(&k.stream(StreamName::Physics)),
            Some((true, true))
        );
        assert_eq!(
            bridge.access_to(&k.heartbeat(DaemonKind::Decay, "i")),
            Some((true, false))
        );
        assert_eq!(
            bridge.access_to(&k.heartbeat(DaemonKind::Bridge, "i")),
            Some((true, true))
        );
        assert_eq!(
            bridge.access_to(&k.bridge_epoch(StreamName::Physics)),
            Some((true, true))
        );
        // The dashboard's reflex view reads, never writes, the reflex path.
        for key in [
            k.resonance_index(),
            k.reflex_hot_text(),
            k.cms("h"),
            k.ghost("h"),
            k.decay_clock(),
            k.reflex_layout(),
            k.trim_claim(StreamName::Queries),
        ] {
            assert_eq!(bridge.access_to(&key), Some((true, false)), "{key}");
        }
        let app = super::user(&k, Role::App);
        assert_eq!(
            app.access_to(&k.stream(StreamName::Ticks(2))),
            Some((false, true))
        );
        assert!(!app.covers_key(&k.dead_letter(StreamName::Ticks(2))));
        assert!(!app.covers_key(&k.fleet()));
        for u in users(&k) {
            assert!(!u.commands.is_empty(), "{} has commands", u.name);
            if u.role != Role::Admin {
                assert!(
                    !u.commands.iter().any(|c| c.starts_with("+@")),
                    "{}: explicit commands",
                    u.name
                );
            }
        }
    }

    #[test]
    fn a_user_line_is_a_redis_acl_rule() {
        let k = Keys::default();
        let u = user(&k, Role::Daemon(DaemonKind::Ghost));
        let line = u.line(Some("#abc"));
        assert!(
            line.starts_with("user kitbash-ghost reset on #abc ~"),
            "{line}"
        );
        assert!(line.contains(" %R~grain:*:sig "), "{line}");
        assert!(
            line.contains(" resetchannels &kitbash:grain-updates -@all +ping "),
            "{line}"
        );
        assert!(line.contains(" +evalsha +eval +script|load "), "{line}");
        assert!(u.line(None).starts_with("user kitbash-ghost reset off ~"));
        let file = render(&users(&k), |u| {
            (u.role == Role::Admin).then(|| "#ff".to_owned())
        });
        assert_eq!(
            file.lines().filter(|l| l.starts_with("user ")).count(),
            Role::all().len()
        );
        assert!(file.contains("user kitbash-admin reset on #ff ~* resetchannels &* -@all +@all"));
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob_match("cms:*", "cms:abc"));
        assert!(glob_match("cms:{*}:grains", "cms:{abc}:grains"));
        assert!(!glob_match("cms:{*}:grains", "cms:abc:grains"));
        assert!(glob_match(
            "kitbash:stream:{ticks:*}*",
            "kitbash:stream:{ticks:3}:dead"
        ));
        assert!(!glob_match(
            "kitbash:stream:{entity:*}*",
            "kitbash:stream:{entity-changes}"
        ));
        assert!(glob_match("a?c", "abc") && !glob_match("a?c", "ac"));
        assert!(glob_match("h[a-c]t", "hbt") && !glob_match("h[^a-c]t", "hbt"));
        assert!(glob_match("x\\*", "x*") && !glob_match("x\\*", "xy"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn roles_round_trip_and_are_unique() {
        let all = Role::all();
        for r in &all {
            assert_eq!(Role::parse(r.slug()), Some(*r));
        }
        let mut names: Vec<String> = all
            .iter()
            .map(|r| r.user_name(&Namespace::none()))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
