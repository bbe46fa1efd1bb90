//! The root-activity poller: long-poll the queue, hand each message to
//! `App::ingest_root_event` (one transaction), delete it only after that committed.
//! While AWS is unreachable it keeps trying with a capped backoff and says so in
//! `/readyz`; the messages wait in SQS (retention: 14 days in our template), so
//! nothing is lost. A message deleted late is redelivered and stored once (by its
//! CloudTrail event id).
use std::{sync::Arc, time::Duration};

use super::queue::RootActivityQueue;
use crate::app::{App, root_activity::FeedHealth};

/// The queue and what the poller reports about it.
pub struct RootFeed {
    pub queue: RootActivityQueue,
    pub health: FeedHealth,
    /// Long-poll wait, seconds (0–20).
    pub wait_seconds: i32,
}

impl RootFeed {
    pub fn new(queue: RootActivityQueue, wait_seconds: u32) -> Arc<Self> {
        Arc::new(Self { queue, health: FeedHealth::default(), wait_seconds: i32::try_from(wait_seconds).unwrap_or(20) })
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    pub received: usize,
    pub deleted: usize,
}

/// One receive → ingest → delete round. Errors are the queue's (the database's are
/// logged per message and leave that message on the queue).
pub async fn poll_once(app: &App, feed: &RootFeed) -> Result<Polled, String> {
    let messages = feed.queue.receive(feed.wait_seconds).await?;
    let mut polled = Polled { received: messages.len(), deleted: 0 };
    for m in messages {
        match app.ingest_root_event(&m.body).await {
            Ok(outcome) => {
                feed.health.counted(&outcome);
                if outcome.deletable() {
                    feed.queue.delete(&m.receipt_handle).await?;
                    polled.deleted += 1;
                } else {
                    tracing::warn!(message_id = %m.message_id, ?outcome, "root activity: a message that is not an event envelope stays for the dead-letter queue");
                }
            }
            Err(e) => {
                // Not deleted: SQS redelivers it after the visibility timeout.
                tracing::warn!(message_id = %m.message_id, error = %crate::error::chain(&e), "root activity: could not store an event; it will be redelivered");
            }
        }
    }
    Ok(polled)
}

/// The poller `serve` runs while the app has a feed.
pub async fn run(app: App, feed: Arc<RootFeed>) {
    feed.health.started();
    let mut failures: u32 = 0;
    let mut last_backlog: Option<tokio::time::Instant> = None;
    loop {
        if last_backlog.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            match feed.queue.backlog().await {
                Ok((waiting, in_flight)) => {
                    feed.health.backlog(waiting, in_flight);
                    last_backlog = Some(tokio::time::Instant::now());
                }
                Err(e) => tracing::debug!(error = %e, "root activity: cannot read the queue's backlog"),
            }
        }
        match poll_once(&app, &feed).await {
            Ok(_) => {
                failures = 0;
                feed.health.poll_ok(app.now().unix_timestamp());
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                feed.health.poll_failed(app.now().unix_timestamp(), e.clone());
                // Backlog is re-read as soon as the queue answers again.
                last_backlog = None;
                let wait = Duration::from_millis(500u64.saturating_mul(1 << failures.min(5)));
                tracing::warn!(error = %e, retry_in = ?wait, "root activity: the queue is unreachable");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
