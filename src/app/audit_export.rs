//! `GET /api/v1/audit/export`: the whole log as JSON lines, streamed. A blocking task
//! walks the log on its own read-only connection and hands chunks of about
//! [`CHUNK_BYTES`] through a channel of [`CHANNEL_CHUNKS`] slots, so a response holds
//! at most a few hundred KiB whatever the size of the log, and a client that stops
//! reading (or goes away) stops the walk.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tokio::sync::mpsc;

use super::App;
use crate::{error::AppError, store};

/// Bytes gathered before a chunk is handed to the response.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the database walk and the client.
pub const CHANNEL_CHUNKS: usize = 4;

/// The export as a stream of chunks, each a run of whole lines.
pub struct ExportStream(mpsc::Receiver<Result<Vec<u8>, std::io::Error>>);

impl futures_core::Stream for ExportStream {
    type Item = Result<Vec<u8>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

impl App {
    /// The file name an export is saved under: `breakglass-<what>-<YYYY-MM-DD>.<ext>`,
    /// dated by the service's clock (UTC), e.g. `breakglass-audit-2026-12-01.jsonl`.
    pub fn export_file_name(&self, what: &str, ext: &str) -> String {
        let d = self.now().to_offset(time::UtcOffset::UTC).date();
        format!("breakglass-{what}-{:04}-{:02}-{:02}.{ext}", d.year(), u8::from(d.month()), d.day())
    }

    /// Start streaming the audit log as JSON lines. Opening the database happens
    /// before the first byte, so a missing database is still a clean error; a failure
    /// later ends the body early (the client sees a truncated transfer, never a
    /// partial line presented as complete).
    #[tracing::instrument(skip_all)]
    pub async fn audit_export_stream(&self) -> Result<ExportStream, AppError> {
        let path = self.db.path().to_owned();
        let conn = tokio::task::spawn_blocking(move || store::open_read_only(&path))
            .await
            .map_err(|_| AppError::Internal("export worker stopped".into()))??;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
            let mut open = true;
            let walked = store::audit::for_each(&conn, |e| {
                if let Err(err) = serde_json::to_writer(&mut chunk, &e) {
                    let _ = tx.blocking_send(Err(std::io::Error::other(err)));
                    open = false;
                    return false;
                }
                chunk.push(b'\n');
                if chunk.len() >= CHUNK_BYTES {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
                    // Blocks while the client is slow; fails once it has gone.
                    open = tx.blocking_send(Ok(full)).is_ok();
                }
                open
            });
            match walked {
                Err(e) => {
                    tracing::error!(error = %e, "audit export stopped");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
                Ok(()) if open && !chunk.is_empty() => {
                    let _ = tx.blocking_send(Ok(chunk));
                }
                Ok(()) => {}
            }
        });
        Ok(ExportStream(rx))
    }
}
