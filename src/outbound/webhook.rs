//! Delivering webhook events: one outbox row of kind `webhook` is one POST
//! of a JSON event to a registered endpoint, signed so that the receiver can
//! tell it came from us and is fresh, and the fan-out loop that turns what
//! happened into such rows (`Store::fan_out_events`).
//!
//! The request: `POST URL` with `Content-Type: application/json`, the body
//! `{"id": DELIVERY, "event": NAME, "created_at": TIME, "data": {...}}`, and
//! the headers `Mailgate-Event: NAME`, `Mailgate-Delivery: DELIVERY` (the
//! same on every retry: receivers use it to ignore repeats) and
//! `Mailgate-Signature: t=UNIX_SECONDS,v1=HEX`, where HEX is the
//! HMAC-SHA256, keyed with the endpoint's secret, of `UNIX_SECONDS.BODY`.
//! A receiver recomputes it and refuses a timestamp more than five minutes
//! old (a replayed request). Any 2xx answer delivers; 5xx, 408, 429 and
//! network failures are retried with the outbox's backoff; any other 4xx
//! fails for good (visible in the outbox, retryable by hand).

use super::mailer::DeliveryError;
use crate::store::{OutboxItem, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The outbox kind of a webhook delivery.
pub use crate::store::WEBHOOK_KIND as KIND;

/// How often the fan-out looks for new events.
const FAN_OUT_EVERY: Duration = Duration::from_millis(500);

/// The `Mailgate-Signature` value of `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", crate::store::hex(&mac.finalize().into_bytes()))
}

/// Sends webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
}

impl Default for WebhookClient {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("mailgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { http }
    }
}

impl WebhookClient {
    /// POSTs the event of `item`; the answer's status line when delivered.
    pub async fn deliver(&self, store: &Store, item: &OutboxItem) -> Result<String, DeliveryError> {
        let context: serde_json::Value = serde_json::from_str(&item.context).unwrap_or_default();
        let Some(hook_id) = context["webhook_id"].as_i64() else {
            return Err(DeliveryError { permanent: true, message: "not a webhook delivery".to_owned() });
        };
        let hook = match store.webhook(hook_id).await {
            Ok(Some(hook)) => hook,
            Ok(None) => {
                return Err(DeliveryError { permanent: true, message: format!("webhook {hook_id} was removed") });
            }
            Err(error) => {
                return Err(DeliveryError { permanent: false, message: format!("reading the webhook: {error}") });
            }
        };
        let event = context["event"].as_str().unwrap_or("");
        let body = serde_json::json!({
            "id": item.id,
            "event": event,
            "created_at": crate::store::rfc3339(item.created_at),
            "data": context["data"],
        })
        .to_string();
        let timestamp = crate::store::now_ms() / 1000;
        let sent = self
            .http
            .post(&hook.url)
            .header("Content-Type", "application/json")
            .header("Mailgate-Event", event)
            .header("Mailgate-Delivery", item.id.to_string())
            .header("Mailgate-Signature", signature(&hook.secret, timestamp, body.as_bytes()))
            .body(body)
            .send()
            .await;
        let response =
            sent.map_err(|error| DeliveryError { permanent: false, message: format!("POST {}: {error}", hook.url) })?;
        let status = response.status();
        if status.is_success() {
            return Ok(format!("HTTP {}", status.as_u16()));
        }
        let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        Err(DeliveryError { permanent: !retry, message: format!("POST {} answered {status}", hook.url) })
    }
}

/// Turns new events into deliveries every half second until `shutdown`.
pub async fn fan_out(store: Store, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(FAN_OUT_EVERY) => {}
        }
        if let Err(error) = store.fan_out_events().await {
            tracing::warn!(%error, "turning events into webhook deliveries failed; trying again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn signatures_cover_the_timestamp_and_the_body() {
        let a = signature("secret", 1_764_806_400, b"{\"a\":1}");
        assert!(a.starts_with("t=1764806400,v1=") && a.len() == "t=1764806400,v1=".len() + 64, "{a}");
        assert_ne!(a, signature("secret", 1_764_806_401, b"{\"a\":1}"));
        assert_ne!(a, signature("secret", 1_764_806_400, b"{\"a\":2}"));
        assert_ne!(a, signature("other", 1_764_806_400, b"{\"a\":1}"));
    }
}
