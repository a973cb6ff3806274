//! Where notifications go. A notification is one CloudEvent (structured JSON mode, spec 1.0)
//! per app and evaluation: `dev.nimbus.alert.firing` with the alerts of the app that began
//! firing, or `dev.nimbus.alert.resolved` with those that ended; silenced alerts are left out.
//! Sinks: a webhook (POSTed as `application/cloudevents+json`, retried three times with a
//! backoff, 5 s per attempt), the process log (target `nimbus::alerts`), and whatever implements
//! [`AlertSink`] (the bus sink of `nimbus-host` publishes to a topic).
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use super::book::Alert;

/// A boxed delivery.
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Something notifications are delivered to.
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    /// Delivers one CloudEvent (JSON, structured mode); an error is logged and counted.
    fn deliver<'a>(&'a self, event: &'a serde_json::Value) -> Delivery<'a>;
}

/// The CloudEvent of a notification about `alerts` of `app`; `firing` or resolved.
pub fn cloud_event(node: &str, app: &str, firing: bool, alerts: &[Alert]) -> serde_json::Value {
    let kind = if firing { "firing" } else { "resolved" };
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    serde_json::json!({
        "specversion": "1.0",
        "type": format!("dev.nimbus.alert.{kind}"),
        "source": format!("nimbus://{node}/alerts"),
        "id": format!("{:016x}", super::book::hash(&(kind, &ids, &time))),
        "time": time,
        "subject": app,
        "datacontenttype": "application/json",
        "data": { "group": app, "state": kind, "alerts": alerts },
    })
}

/// POSTs notifications to a URL.
#[derive(Debug)]
pub struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook to `url` (`http` or `https`).
    pub fn new(url: &str) -> Result<Self, String> {
        let url: reqwest::Url = url.parse().map_err(|e| format!("alert webhook `{url}`: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("alert webhook `{url}`: only http and https URLs"));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("alert webhook client: {e}"))?;
        Ok(Self { url, client })
    }
}

impl AlertSink for Webhook {
    fn deliver<'a>(&'a self, event: &'a serde_json::Value) -> Delivery<'a> {
        Box::pin(async move {
            let mut last = String::new();
            for attempt in 0..3u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                let sent = self
                    .client
                    .post(self.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/cloudevents+json")
                    .body(event.to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => last = format!("{} answered {}", self.url, r.status()),
                    Err(e) => last = format!("{}: {e}", self.url),
                }
            }
            Err(last)
        })
    }
}

/// Writes notifications to the process log.
#[derive(Debug)]
pub struct LogSink;

impl AlertSink for LogSink {
    fn deliver<'a>(&'a self, event: &'a serde_json::Value) -> Delivery<'a> {
        let kind = event["type"].as_str().unwrap_or_default();
        if let Some(summary) = event["data"]["summary"].as_str() {
            tracing::warn!(target: "nimbus::alerts", kind, subject = %event["subject"].as_str().unwrap_or_default(), "{summary}");
        }
        for a in event["data"]["alerts"].as_array().into_iter().flatten() {
            tracing::warn!(target: "nimbus::alerts", kind, id = %a["id"].as_str().unwrap_or_default(),
                app = %a["app"].as_str().unwrap_or_default(), component = %a["component"].as_str().unwrap_or_default(),
                "{}", a["summary"].as_str().unwrap_or_default());
        }
        Box::pin(async { Ok(()) })
    }
}
