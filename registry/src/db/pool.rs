//! The reason behind a timed-out connection checkout.

use std::sync::{Arc, Mutex, PoisonError};

use bb8::ErrorSink;
use diesel_async::pooled_connection::PoolError;
use tokio::time::Instant;

/// bb8 error sink that keeps the pool's latest connection error. bb8 0.9
/// sends failed connects and failed health checks here and returns only
/// `RunError::TimedOut` to the caller, so this is where the reason
/// survives.
#[derive(Debug, Clone)]
pub(super) struct LastConnectError {
    address: Arc<str>,
    latest: Arc<Mutex<Option<(Instant, String)>>>,
}

impl LastConnectError {
    pub(super) fn new(address: String) -> Self {
        Self {
            address: address.into(),
            latest: Arc::default(),
        }
    }

    /// Returns the latest error if it happened at or after `start`.
    pub(super) fn since(&self, start: Instant) -> Option<String> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest
            .as_ref()
            .filter(|(at, _)| *at >= start)
            .map(|(_, reason)| reason.clone())
    }
}

impl ErrorSink<PoolError> for LastConnectError {
    fn sink(&self, error: PoolError) {
        let reason = error.to_string();
        // Logged at debug level because bb8 retries a failed connect several
        // times a second, and the caller's error contains the reason.
        tracing::debug!(address = %self.address, error = %reason, "PostgreSQL connection failed");
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        *latest = Some((Instant::now(), reason));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}
