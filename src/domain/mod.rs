//! Pure types and rules: no I/O, no clock.
pub mod announce;
pub mod audit;
pub mod checkout;
pub mod drill;
pub mod event;
pub mod posture;
pub mod root_activity;
pub mod root_task;
pub mod secrets;
pub mod summary;
pub mod totp;
pub mod types;

pub use types::*;

/// A rule broken by some input, with a stable code and a message saying how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}
