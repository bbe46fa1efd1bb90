//! The delivery worker: delivers announcements as they become due. The outbox itself
//! is the state, so a restart loses nothing and repeats at most the one message in
//! flight. Started by [`crate::server::Server`], never by a handler.
use std::time::Duration;

use crate::app::{App, announce::Delivery};

/// How long to wait after one delivery step before the next.
pub fn pause_after(step: &Delivery, now: i64) -> Duration {
    let secs = match step {
        Delivery::Delivered { .. } | Delivery::Failed { .. } => 0,
        Delivery::NotDue { until } => (until - now).clamp(1, 60) as u64,
        Delivery::Retrying { .. } => 1,
        Delivery::Idle | Delivery::NoSink => 2,
    };
    Duration::from_secs(secs)
}

/// Run forever (until the task is dropped).
pub async fn run(app: App) {
    loop {
        let pause = match app.deliver_one().await {
            Ok(step) => pause_after(&step, app.now().unix_timestamp()),
            Err(e) => {
                tracing::error!(error = %crate::error::chain(&e), "announcement delivery stopped for a minute");
                Duration::from_secs(60)
            }
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}
