//! Sessions (seed 004): `session:{user}`, a hash of the application's JSON data, a CSRF token and
//! the creation time, expiring 30 minutes after the last write — or after the last read too,
//! with sliding refresh. CSRF tokens are 256 random bits and are compared in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_schema::{Keys, ttl};
use subtle::ConstantTimeEq;

use crate::ClientError;

/// Writes `data` into an existing session and pushes its expiry back; 0 when there is none.
/// KEYS[1] = session; ARGV = data field, data, ttl ms.
const UPDATE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Sets a new CSRF token on an existing session; 0 when there is none.
const ROTATE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// One user's session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// Whose session it is.
    pub user: String,
    /// The application's data (a JSON value, usually an object).
    pub data: serde_json::Value,
    /// The CSRF token to embed in forms; check it with [`SessionStore::verify_csrf`].
    pub csrf_token: String,
    /// When the session was created, Unix milliseconds.
    pub created_ms: u64,
}

/// Sessions in Redis.
#[derive(Clone)]
pub struct SessionStore {
    /// The connected client.
    client: Client,
    /// Where `session:{user}` lives.
    keys: Keys,
    /// Session lifetime after the last write (or read, with `sliding`). Default 30 min.
    ttl: Duration,
    /// Whether reads push the expiry back.
    sliding: bool,
    /// [`UPDATE_LUA`].
    update: Script,
    /// [`ROTATE_LUA`].
    rotate: Script,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("keys", &self.keys)
            .field("ttl", &self.ttl)
            .field("sliding", &self.sliding)
            .finish_non_exhaustive()
    }
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SessionStore {
    /// Sessions of the seed's length (30 min) with sliding refresh.
    ///
    /// ```no_run
    /// # async fn demo(client: fred::prelude::Client) -> Result<(), kitbash_client::ClientError> {
    /// use kitbash_client::session::SessionStore;
    /// let sessions = SessionStore::new(client, kitbash_schema::Keys::default());
    /// let s = sessions.create("alice", serde_json::json!({"role": "admin"})).await?;
    /// assert!(sessions.verify_csrf("alice", &s.csrf_token).await?);
    /// let again = sessions.get("alice").await?;
    /// assert_eq!(again.map(|s| s.data["role"].clone()), Some("admin".into()));
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, keys: Keys) -> Self {
        Self {
            client,
            keys,
            ttl: ttl::SESSION
                .secs()
                .map_or(Duration::from_secs(1800), Duration::from_secs),
            sliding: true,
            update: Script::from_lua(UPDATE_LUA),
            rotate: Script::from_lua(ROTATE_LUA),
        }
    }

    /// Same store with another session lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// Same store with sliding refresh on (reads extend the session) or off.
    pub fn with_sliding(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis().max(1) as i64
    }

    /// Starts a session for `user` (replacing any other) with a fresh CSRF token.
    pub async fn create(
        &self,
        user: &str,
        data: serde_json::Value,
    ) -> Result<Session, ClientError> {
        let key = self.keys.session(user);
        let session = Session {
            user: user.to_owned(),
            data,
            csrf_token: new_token(),
            created_ms: now_ms(),
        };
        let tx = self.client.multi();
        let _: () = tx.del(&key).await?;
        let _: () = tx
            .hset(
                &key,
                vec![
                    (Keys::SESSION_DATA, session.data.to_string()),
                    (Keys::SESSION_CSRF, session.csrf_token.clone()),
                    (Keys::SESSION_CREATED, session.created_ms.to_string()),
                ],
            )
            .await?;
        let _: () = tx.pexpire(&key, self.ttl_ms(), None).await?;
        let _: Value = tx.exec(true).await?;
        Ok(session)
    }

    /// The session of `user`, if it exists; with sliding refresh, also pushes its expiry back.
    pub async fn get(&self, user: &str) -> Result<Option<Session>, ClientError> {
        let key = self.keys.session(user);
        let fields: std::collections::HashMap<String, String> = if self.sliding {
            let pipe = self.client.pipeline();
            let _: () = pipe.hgetall(&key).await?;
            let _: () = pipe.pexpire(&key, self.ttl_ms(), None).await?;
            let (fields, _): (std::collections::HashMap<String, String>, i64) = pipe.all().await?;
            fields
        } else {
            self.client.hgetall(&key).await?
        };
        if fields.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| {
            fields
                .get(name)
                .cloned()
                .ok_or_else(|| ClientError::Reply(format!("{key}: session without `{name}`")))
        };
        Ok(Some(Session {
            user: user.to_owned(),
            data: serde_json::from_str(&field(Keys::SESSION_DATA)?)?,
            csrf_token: field(Keys::SESSION_CSRF)?,
            created_ms: field(Keys::SESSION_CREATED)?.parse().map_err(|_| {
                ClientError::Reply(format!(
                    "{key}: `{}` is not a number",
                    Keys::SESSION_CREATED
                ))
            })?,
        }))
    }

    /// Replaces the data of an existing session and pushes its expiry back. Returns false when
    /// there is no session (it expired or was destroyed): nothing is written then.
    pub async fn update(&self, user: &str, data: &serde_json::Value) -> Result<bool, ClientError> {
        let n: i64 = self
            .update
            .evalsha_with_reload(
                &self.client,
                self.keys.session(user),
                vec![
                    Keys::SESSION_DATA.to_owned(),
                    data.to_string(),
                    self.ttl_ms().to_string(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Pushes the session's expiry back by the full TTL. Returns false when there is none.
    pub async fn touch(&self, user: &str) -> Result<bool, ClientError> {
        let n: i64 = self
            .client
            .pexpire(self.keys.session(user), self.ttl_ms(), None)
            .await?;
        Ok(n == 1)
    }

    /// Whether `token` is the session's CSRF token, compared in constant time. False when
    /// there is no session.
    pub async fn verify_csrf(&self, user: &str, token: &str) -> Result<bool, ClientError> {
        let stored: Option<String> = self
            .client
            .hget(self.keys.session(user), Keys::SESSION_CSRF)
            .await?;
        Ok(stored.is_some_and(|s| csrf_eq(s.as_bytes(), token.as_bytes())))
    }

    /// Issues a new CSRF token for an existing session (e.g. after login). `None` when there is
    /// no session.
    pub async fn rotate_csrf(&self, user: &str) -> Result<Option<String>, ClientError> {
        let token = new_token();
        let n: i64 = self
            .rotate
            .evalsha_with_reload(
                &self.client,
                self.keys.session(user),
                vec![Keys::SESSION_CSRF.to_owned(), token.clone()],
            )
            .await?;
        Ok((n == 1).then_some(token))
    }

    /// Ends the session. Returns whether there was one.
    pub async fn destroy(&self, user: &str) -> Result<bool, ClientError> {
        let n: i64 = self.client.del(self.keys.session(user)).await?;
        Ok(n > 0)
    }
}

/// Constant-time equality of two tokens (the length is not secret: tokens have a fixed size).
pub fn csrf_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_compare_exactly() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(csrf_eq(a.as_bytes(), a.clone().as_bytes()));
        assert!(!csrf_eq(a.as_bytes(), b.as_bytes()));
        assert!(!csrf_eq(a.as_bytes(), &a.as_bytes()[..63]));
        assert!(!csrf_eq(b"", a.as_bytes()));
    }
}
