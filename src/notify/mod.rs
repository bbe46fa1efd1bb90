//! Announcements leave through a [`Sink`]. The only sink today is SNS ([`SnsSink`]);
//! with none configured the outbox keeps filling and shows `no_sink`. A second sink
//! (webhook, e-mail) is one new file here implementing [`Sink`].
//!
//! [`worker`] is the delivery loop `serve` runs; [`backoff::next_attempt`] is the pure
//! retry schedule it uses.
pub mod backoff;
pub mod sns;
pub mod worker;

use std::{future::Future, pin::Pin};

pub use backoff::{Backoff, NextAttempt, next_attempt};
pub use sns::SnsSink;

/// One message as it goes out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub event_id: String,
    pub event: String,
    pub severity: String,
    pub account_id: Option<String>,
    pub subject: String,
    /// The JSON document (docs/announcements.md).
    pub body: String,
}

/// What `publish` returns: the sink's message id, or a readable error (stored on the
/// outbox row, shown to operators; it must not contain secrets).
pub type PublishResult = Result<String, String>;

/// Somewhere announcements are delivered to. The outbox does the retrying, durably:
/// a sink makes one attempt per call and should bound its own time (the worker
/// waits for it).
pub trait Sink: Send + Sync + 'static {
    /// Short name shown in `/readyz` and the outbox status (`"sns"`).
    fn name(&self) -> &'static str;

    /// Deliver one message once.
    fn publish<'a>(&'a self, message: &'a Outgoing) -> Pin<Box<dyn Future<Output = PublishResult> + Send + 'a>>;
}
