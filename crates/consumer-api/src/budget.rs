//! Response bytes in flight, bounded in total. A list page is up to `limit` images of
//! ~30 KB of hex each; without a bound, the memory held by pages being built and sent
//! grows with the number of requests in progress, and only a slow database kept it low.
//!
//! Each data request reserves bytes before it queries (a page its whole byte budget, one
//! image a small share), waits while the budget is spent (within the request timeout),
//! fits the reservation to the body it built, and the body keeps it until the server
//! has sent it or dropped the connection. `/metrics` shows the bytes held.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    http::header,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The total of response bytes the API may hold at once, in KiB permits.
#[derive(Clone)]
pub struct ResponseBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
    in_flight: IntGauge,
}

impl ResponseBudget {
    /// A budget of `total_bytes`, reported through `in_flight` (bytes held).
    pub fn new(total_bytes: usize, in_flight: IntGauge) -> Self {
        let total_kib = u32::try_from(total_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            in_flight,
        }
    }

    /// `bytes` in permits: at least one, at most the whole budget (a single body larger
    /// than the budget still gets through, alone).
    fn kib(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib)
    }

    fn report(&self) {
        let held = self.total_kib as usize - self.permits.available_permits();
        self.in_flight
            .set(i64::try_from(held * 1024).unwrap_or(i64::MAX));
    }

    /// Waits until `bytes` are free, and holds them.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(self.kib(bytes))
            .await
            .expect("the budget's semaphore is never closed");
        self.report();
        Reservation {
            permit: Some(permit),
            budget: self.clone(),
        }
    }
}

/// Bytes held for one response; released when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: ResponseBudget,
}

impl Reservation {
    /// Fits the reservation to `body` (gives back what it does not need, or waits for
    /// what it lacks), and answers `body` as JSON, holding the bytes until it is sent.
    pub async fn respond(mut self, body: Vec<u8>) -> Response {
        let need = self.budget.kib(body.len());
        if let Some(permit) = self.permit.as_mut() {
            let held = u32::try_from(permit.num_permits()).unwrap_or(u32::MAX);
            if need < held {
                drop(permit.split((held - need) as usize));
            } else if need > held {
                let more = Arc::clone(&self.budget.permits)
                    .acquire_many_owned(need - held)
                    .await
                    .expect("the budget's semaphore is never closed");
                permit.merge(more);
            }
        }
        self.budget.report();
        let body = HeldBody {
            data: Some(Bytes::from(body)),
            _reservation: self,
        };
        (
            [(header::CONTENT_TYPE, "application/json")],
            Body::new(body),
        )
            .into_response()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.budget.report();
    }
}

/// One chunk, with the reservation dropped only when the server polls the body again
/// (it does once its write buffer has drained, and finds the end) or drops it with a
/// closed connection (see `listener`'s write timeout for a client that stops reading).
/// It never reports its end early: the server would drop it, and the reservation, as
/// soon as it took the chunk, with the bytes still unsent in its buffer.
struct HeldBody {
    data: Option<Bytes>,
    _reservation: Reservation,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize) -> (ResponseBudget, IntGauge) {
        let gauge = IntGauge::new("held", "bytes held").unwrap();
        (ResponseBudget::new(total, gauge.clone()), gauge)
    }

    #[tokio::test]
    async fn a_reservation_is_fitted_to_its_body_and_released_with_it() {
        let (budget, held) = budget(64 * 1024);
        let reservation = budget.reserve(32 * 1024).await;
        assert_eq!(held.get(), 32 * 1024);
        let response = reservation.respond(vec![b'x'; 3000]).await;
        assert_eq!(
            held.get(),
            3 * 1024,
            "fitted to the body, rounded up to KiB"
        );
        drop(response);
        assert_eq!(held.get(), 0);
    }

    #[tokio::test]
    async fn a_reservation_waits_while_the_budget_is_spent() {
        let (budget, _) = budget(10 * 1024);
        let first = budget.reserve(8 * 1024).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(8 * 1024).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "only 2 KiB are free");
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("freed")
            .unwrap();
        drop(second);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_whole_budget_still_gets_through_alone() {
        let (budget, held) = budget(4 * 1024);
        let response = budget.reserve(1).await.respond(vec![0; 10_000]).await;
        assert_eq!(held.get(), 4 * 1024);
        drop(response);
        assert_eq!(held.get(), 0);
    }
}
