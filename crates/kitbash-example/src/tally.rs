//! The example's consumer: counts query texts, each entry exactly once.

use kitbash_runtime::DaemonContext;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome};
use kitbash_runtime::idempotency::apply_once;
use kitbash_schema::messages::QueryEvent;
use kitbash_schema::{Keys, StreamName};

/// How long an entry's "already counted" marker lives: far longer than any redelivery.
const MARKER_TTL_SECS: u64 = 24 * 3600;

/// Counts query texts. Delivery is at least once, so each count is applied with its entry's
/// marker in one script ([`apply_once`]): a redelivered entry is never counted twice.
#[derive(Clone, Debug)]
pub struct Tally {
    client: fred::clients::Client,
    keys: Keys,
    max_text_bytes: usize,
}

impl Tally {
    /// A handler writing through the daemon's command connection.
    pub fn new(ctx: &DaemonContext) -> Self {
        Self {
            client: ctx.redis.client.clone(),
            keys: ctx.keys.clone(),
            max_text_bytes: ctx.config.example.max_text_bytes,
        }
    }

    async fn count(&self, d: &Delivery<QueryEvent>) -> Outcome {
        let text = d.message.text.trim();
        if text.len() > self.max_text_bytes {
            return Outcome::Dead(format!(
                "query text of {} bytes is longer than example.max_text_bytes = {}",
                text.len(),
                self.max_text_bytes
            ));
        }
        let tally = self.keys.example_tally();
        let marker = self.keys.done_marker(StreamName::Queries, &d.id);
        let incr = vec![
            "HINCRBY".into(),
            tally.as_str().into(),
            text.into(),
            1.into(),
        ];
        match apply_once(
            &self.client,
            &marker,
            MARKER_TTL_SECS,
            std::slice::from_ref(&tally),
            &[incr],
        )
        .await
        {
            Ok(_) => Outcome::Ack,
            // Redis cannot do it now: held and retried (never dead-lettered); any other
            // failure is redelivered and dead-lettered after `consumer.max_deliveries`.
            Err(e) => Outcome::from_error(&e),
        }
    }
}

impl Handler<QueryEvent> for Tally {
    async fn handle(&mut self, batch: Vec<Delivery<QueryEvent>>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        for d in &batch {
            out.push(self.count(d).await);
        }
        out
    }
}
