//! Tokens as Centrifugo reads them: HMAC JWTs (HS256/384/512) with the secret of `[bridge]
//! token_secret` (or its environment variable).
//!
//! - Connection token: `sub` (the user; empty = anonymous), optional `exp` (the connection then
//!   expires unless refreshed). Expired → error 109 (the SDK fetches a new one); invalid →
//!   close 3500.
//! - Subscription token: `channel` (must be the channel subscribed), `sub` (must be the
//!   connection's user), optional `exp`. Expired → error 109; anything else wrong → error 103.
//!
//! `aud`, `iss` and `nbf` are not checked (Centrifugo checks them only when configured).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No secret is configured, so no token can be valid.
    #[error("tokens are not accepted (no [bridge] token_secret)")]
    NoSecret,
    /// Its `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Bad signature, bad encoding, another algorithm, a claim that does not match.
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct ConnectionClaims {
    #[serde(default)]
    sub: String,
    exp: Option<u64>,
}

#[derive(Deserialize)]
struct SubscriptionClaims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    channel: String,
    exp: Option<u64>,
}

/// A verified token: its user and expiry (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `sub`.
    pub user: String,
    /// `exp`, if any.
    pub exp: Option<u64>,
}

/// Verifies tokens with one secret.
pub struct Auth {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("secret", &self.key.as_ref().map(|_| "…"))
            .finish()
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    /// A verifier for `secret` (`None`: every token is refused).
    pub fn new(secret: Option<&[u8]>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self {
            key: secret.map(DecodingKey::from_secret),
            validation,
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        let key = self.key.as_ref().ok_or(TokenError::NoSecret)?;
        jsonwebtoken::decode::<T>(token, key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    fn fresh(exp: Option<u64>) -> Result<(), TokenError> {
        match exp {
            Some(e) if e <= now_s() => Err(TokenError::Expired),
            _ => Ok(()),
        }
    }

    /// Verifies a connection token.
    pub fn connection(&self, token: &str) -> Result<Grant, TokenError> {
        let c: ConnectionClaims = self.decode(token)?;
        Self::fresh(c.exp)?;
        Ok(Grant {
            user: c.sub,
            exp: c.exp,
        })
    }

    /// Verifies a subscription token for `channel` held by `user`.
    pub fn subscription(
        &self,
        token: &str,
        user: &str,
        channel: &str,
    ) -> Result<Grant, TokenError> {
        let c: SubscriptionClaims = self.decode(token)?;
        if c.channel != channel {
            return Err(TokenError::Invalid(format!(
                "the token is for channel {:?}",
                c.channel
            )));
        }
        if c.sub != user {
            return Err(TokenError::Invalid("the token is for another user".into()));
        }
        Self::fresh(c.exp)?;
        Ok(Grant {
            user: c.sub,
            exp: c.exp,
        })
    }

    /// Seconds until `exp` (at least 1), for a reply's `ttl`.
    pub fn ttl(exp: u64) -> u64 {
        exp.saturating_sub(now_s()).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn token(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    #[test]
    fn connection_tokens() {
        let a = Auth::new(Some(b"s3cret"));
        let later = now_s() + 3600;
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let t = token(
                alg,
                b"s3cret",
                serde_json::json!({"sub": "ann", "exp": later}),
            );
            assert_eq!(
                a.connection(&t),
                Ok(Grant {
                    user: "ann".into(),
                    exp: Some(later)
                })
            );
        }
        let t = token(
            Algorithm::HS256,
            b"s3cret",
            serde_json::json!({"sub": "bo"}),
        );
        assert_eq!(a.connection(&t).map(|g| g.exp), Ok(None));
        let t = token(
            Algorithm::HS256,
            b"s3cret",
            serde_json::json!({"sub": "bo", "exp": 1000}),
        );
        assert_eq!(a.connection(&t), Err(TokenError::Expired));
        let t = token(Algorithm::HS256, b"other", serde_json::json!({"sub": "bo"}));
        assert!(matches!(a.connection(&t), Err(TokenError::Invalid(_))));
        assert!(matches!(
            a.connection("not.a.jwt"),
            Err(TokenError::Invalid(_))
        ));
        assert_eq!(Auth::new(None).connection(&t), Err(TokenError::NoSecret));
    }

    #[test]
    fn subscription_tokens() {
        let a = Auth::new(Some(b"k"));
        let t = token(
            Algorithm::HS256,
            b"k",
            serde_json::json!({"sub": "ann", "channel": "fleet"}),
        );
        assert!(a.subscription(&t, "ann", "fleet").is_ok());
        assert!(matches!(
            a.subscription(&t, "ann", "physics"),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            a.subscription(&t, "bo", "fleet"),
            Err(TokenError::Invalid(_))
        ));
        let t = token(
            Algorithm::HS256,
            b"k",
            serde_json::json!({"sub": "ann", "channel": "fleet", "exp": 5}),
        );
        assert_eq!(a.subscription(&t, "ann", "fleet"), Err(TokenError::Expired));
    }
}
