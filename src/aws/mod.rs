//! breakglass's side of AWS beyond announcements: the root activity feed (CloudTrail
//! root events routed by EventBridge to a central SQS queue, long-polled here).
//! `sts:AssumeRoot` for accounts without root passwords (`root_tasks`).
//! The templates that build the AWS side are in `deploy/aws/`.
pub mod feed;
pub mod posture;
pub mod queue;
pub mod root_tasks;

pub use feed::RootFeed;
pub use posture::PostureReader;
pub use queue::RootActivityQueue;
pub use root_tasks::RootTasks;

/// An SDK error's text, cut at 300 bytes: enough to act on, short enough for a log
/// entry or an announcement.
pub(crate) fn short(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    if s.len() > 300 { format!("{}…", &s[..s.floor_char_boundary(300)]) } else { s }
}
