//! The dead-letter circuit breaker: dead letters are for the odd poison record. When a
//! large share of recent records would go to the dead-letter topic, the cause is almost
//! never the records (a producer bug, a schema change, a misrouted topic): the job then
//! holds the stream, unready, instead of draining the topic into the DLQ. Pure, so its
//! arithmetic is a unit test.

use std::collections::VecDeque;

/// The last `window` records' fates (dead-lettered or not).
#[derive(Debug)]
pub struct Breaker {
    window: usize,
    max_share: f64,
    recent: VecDeque<bool>,
    dead: usize,
}

impl Breaker {
    /// A closed breaker over `window` records that opens above `max_share` dead letters.
    pub fn new(window: usize, max_share: f64) -> Self {
        Self {
            window,
            max_share,
            recent: VecDeque::with_capacity(window),
            dead: 0,
        }
    }

    /// A breaker closed after a probe record went through, its window full and at the
    /// threshold, the dead letters newest: one more dead letter before the window has
    /// refilled with good records opens it again (a flood does not get a window's worth
    /// through on the strength of one good record).
    pub fn after_probe(window: usize, max_share: f64) -> Self {
        let mut breaker = Self::new(window, max_share);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )] // a share of a small count
        let dead = ((max_share * window as f64).floor() as usize).min(window);
        breaker.recent = std::iter::repeat_n(false, window - dead)
            .chain(std::iter::repeat_n(true, dead))
            .collect();
        breaker.dead = dead;
        breaker
    }

    /// Whether a batch of `records` of which `dead` are to be dead-lettered may go: it
    /// may not when, with it, more than `max_share` of the last `window` records would be
    /// dead letters (counted against the whole window, so a lone poison record at start-up
    /// never trips it). A batch that may go is recorded; one that may not is not.
    pub fn admit(&mut self, records: usize, dead: usize) -> bool {
        let mut recent = self.recent.clone();
        let mut count = self.dead;
        for i in 0..records {
            let is_dead = i < dead;
            recent.push_back(is_dead);
            count += usize::from(is_dead);
            if recent.len() > self.window && recent.pop_front() == Some(true) {
                count -= 1;
            }
        }
        #[allow(clippy::cast_precision_loss)] // record counts are small
        let over = count as f64 > self.max_share * self.window as f64;
        if !over {
            self.recent = recent;
            self.dead = count;
        }
        !over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_poison_record_passes_and_a_flood_is_held() {
        let mut b = Breaker::new(10, 0.5);
        assert!(
            b.admit(1, 1),
            "one dead letter of ten is fine, even as the first record"
        );
        assert!(b.admit(4, 4), "five of ten is the limit, not over it");
        assert!(!b.admit(1, 1), "six of the last ten would be over half");
        assert!(!b.admit(1, 1), "a held batch was not recorded; still over");
        assert!(
            b.admit(5, 0),
            "healthy records push the dead letters out of the window"
        );
        assert!(b.admit(1, 1));
    }

    #[test]
    fn a_breaker_closed_by_a_probe_reopens_at_the_next_dead_letter_until_good_records_refill_it() {
        let mut b = Breaker::after_probe(10, 0.5);
        assert!(!b.admit(1, 1), "at the threshold: one more opens it");
        assert!(b.admit(4, 0));
        assert!(
            !b.admit(1, 1),
            "four good records pushed out good ones only"
        );
        assert!(b.admit(1, 0));
        assert!(b.admit(1, 1), "the oldest dead letter left the window");
    }

    #[test]
    fn a_share_of_one_never_trips() {
        let mut b = Breaker::new(3, 1.0);
        assert!(b.admit(100, 100));
    }
}
