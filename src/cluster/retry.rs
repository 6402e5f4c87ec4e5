//! Retries with exponential backoff for calls to the API server: on 409 conflicts of optimistic
//! concurrency, 429 throttling, 5xx answers and connection errors. Field-manager conflicts of
//! server-side apply (also 409) are not retried: trying again cannot resolve them.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub retries: usize,
    /// Delay before the first retry; doubles each time (with jitter).
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 4,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// True when `error` is worth another attempt.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            let conflict_of_fields = status.code == 409
                && (status.message.contains("conflict with")
                    || status.details.as_ref().is_some_and(|d| {
                        d.causes.iter().any(|c| c.reason == "FieldManagerConflict")
                    }));
            (status.code == 409 && !conflict_of_fields) || status.code == 429 || status.code >= 500
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `call` until it succeeds, fails with a non-transient error, or retries run out.
pub async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    call: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(policy.initial_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.retries)
            .with_jitter(),
    )
    .when(is_transient)
    .notify(|error, delay| {
        tracing::warn!(%what, error = %error, retry_in = ?delay, "transient API error, retrying");
    })
    .await
}
