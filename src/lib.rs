//! breakglass: two-person custody of AWS account root credentials.
//!
//! Layers (docs/ARCHITECTURE.md): `server` (the one start-up path) → `http` (thin axum
//! handlers) → `app` (use cases, one transaction each, the only writer of audit and
//! outbox rows) → `domain` (pure rules) and `store` (rusqlite) / `crypto` (age
//! envelopes, sealing); `notify` delivers announcements through a `Sink`.
#![forbid(unsafe_code)]

pub mod app;
pub mod aws;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod store;
pub mod telemetry;

pub use http::build_router;
