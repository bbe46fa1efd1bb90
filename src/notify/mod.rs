//! Announcements leave through a sink. The only sink is SNS; with none configured the
//! outbox keeps filling and shows `no_sink`.
pub mod sns;

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
