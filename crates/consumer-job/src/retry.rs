//! Retrying transient faults: jittered exponential backoff, forever, until the caller
//! gives up through a cancellation token. Nothing here skips work: a caller either gets
//! its success, a permanent error to dead-letter, or `Abandoned` (and commits nothing).

use std::{future::Future, time::Duration};

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based): half of `base·2^attempt` (capped
    /// at `max`) plus a random part up to the other half, so replicas do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }
}

/// Why [`retry`] returned without a success.
#[derive(Debug)]
pub enum Gave<E> {
    /// The error is permanent: retrying cannot help.
    Up(E),
    /// The cancellation token fired first.
    Abandoned,
}

/// Runs `op` until it succeeds, fails permanently, or `cancel` fires. `on_retry` is told
/// of every transient failure (for logs and metrics) before the delay.
pub async fn retry<T, E, F, Fut>(
    backoff: Backoff,
    cancel: &CancellationToken,
    mut op: F,
    is_retriable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, Gave<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Gave::Abandoned),
            result = op() => result,
        };
        match result {
            Ok(value) => return Ok(value),
            Err(e) if is_retriable(&e) => {
                let delay = backoff.delay(attempt);
                on_retry(&e, attempt, delay);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(Gave::Abandoned),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(Gave::Up(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const FAST: Backoff = Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(4),
    };

    #[test]
    fn delays_grow_and_stay_within_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let cap = (Duration::from_millis(100) * 2u32.pow(attempt.min(20))).min(b.max);
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d:?}");
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = Cell::new(0);
        let retries = Cell::new(0);
        let result: Result<u32, Gave<&str>> = retry(
            FAST,
            &CancellationToken::new(),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 4 { Err("busy") } else { Ok(n) } }
            },
            |_| true,
            |_, _, _| retries.set(retries.get() + 1),
        )
        .await;
        assert_eq!(result.unwrap(), 4);
        assert_eq!(retries.get(), 3);
    }

    #[tokio::test]
    async fn a_permanent_error_is_returned_at_once() {
        let result: Result<(), Gave<&str>> = retry(
            FAST,
            &CancellationToken::new(),
            || async { Err("bad") },
            |_| false,
            |_, _, _| panic!("no retry"),
        )
        .await;
        assert!(matches!(result, Err(Gave::Up("bad"))));
    }

    #[tokio::test]
    async fn cancellation_abandons_a_retry_loop() {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let result: Result<(), Gave<&str>> = retry(
            FAST,
            &cancel,
            || async { Err("down") },
            |_| true,
            |_, attempt, _| {
                if attempt == 2 {
                    trigger.cancel();
                }
            },
        )
        .await;
        assert!(matches!(result, Err(Gave::Abandoned)));
    }
}
