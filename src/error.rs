//! The use-case error type. Each variant that reaches a caller carries a stable,
//! documented code (docs/api.md); `Internal` is logged once and never sent.
use crate::{crypto::CryptoError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input is malformed or breaks a rule (400).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// No valid session, or authentication failed (401).
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// Authenticated, but not allowed (403).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// The thing named does not exist (404).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The request conflicts with current state (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The thing existed but has expired or been used up (410).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// Too many requests (429).
    #[error("{message}")]
    RateLimited { code: &'static str, message: String },
    /// The vault cannot serve this request (503).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// A service breakglass depends on (AWS) refused or failed (502).
    #[error("{message}")]
    Upstream { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("internal error: {0}")]
    Internal(String),
    /// Something failed that the caller cannot fix; `source` keeps the cause (logged
    /// with its whole chain, never sent).
    #[error("{context}")]
    Unexpected {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

macro_rules! ctor {
    ($name:ident, $variant:ident) => {
        pub fn $name(code: &'static str, message: impl Into<String>) -> Self {
            Self::$variant { code, message: message.into() }
        }
    };
}

impl AppError {
    ctor!(invalid, Invalid);
    ctor!(unauthenticated, Unauthenticated);
    ctor!(forbidden, Forbidden);
    ctor!(not_found, NotFound);
    ctor!(conflict, Conflict);
    ctor!(gone, Gone);
    ctor!(unavailable, Unavailable);
    ctor!(upstream, Upstream);

    /// An internal failure with its cause kept: `AppError::unexpected("encoding the announcement", e)`.
    pub fn unexpected(context: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unexpected { context, source: Box::new(source) }
    }

    /// Whether this is a server-side failure (500: logged, never shown).
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Crypto(_) | Self::Internal(_) | Self::Unexpected { .. })
    }

    /// The stable code of this error, `internal` for the ones never shown.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { code, .. }
            | Self::Unauthenticated { code, .. }
            | Self::Forbidden { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Gone { code, .. }
            | Self::RateLimited { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Upstream { code, .. } => code,
            Self::Store(_) | Self::Crypto(_) | Self::Internal(_) | Self::Unexpected { .. } => "internal",
        }
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sqlite(e))
    }
}

impl From<crate::domain::ValidationError> for AppError {
    fn from(e: crate::domain::ValidationError) -> Self {
        Self::Invalid { code: e.code, message: e.message }
    }
}

/// An error and its causes on one line, `outer: cause: root cause`, for logs. A cause
/// whose text its parent already contains (`#[error("…: {0}")]` with `#[from]`) is
/// not repeated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_keeps_every_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let e = AppError::unexpected("writing the high-water mark", io);
        assert_eq!(chain(&e), "writing the high-water mark: disk on fire");
        assert_eq!(e.code(), "internal");
        assert!(e.is_internal());
        let sq = AppError::from(rusqlite::Error::InvalidQuery);
        let text = chain(&sq);
        assert_eq!(text.matches("Query is not read-only").count(), 1, "{text}");
        assert!(!AppError::invalid("x", "y").is_internal());
    }
}
