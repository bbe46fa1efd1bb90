//! The one integration-test binary (each extra test binary relinks the whole tree).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

mod accounts;
mod announcements;
mod audit_log;
mod audit_pages;
mod audit_replay;
mod aws;
mod browser;
mod checkouts;
mod cli;
mod drills;
mod enrol_and_login;
mod events;
mod hardening;
mod http_hygiene;
mod migrations;
mod ops;
mod quorum;
mod recovery_kit;
mod root_tasks;
mod server;
mod soak;
mod web_crypto;
