//! The job's holds, where an operator looks: while the stream is held for a reason that
//! does not pass by itself, `leafsync_job_stalled{reason}` is 1 (and `/ready` answers
//! 503), one log line says when the hold starts and why, and one says when it ends and
//! how long it lasted. Passing faults (a retried timeout) are not holds.

use std::time::Instant;

use prometheus::IntGaugeVec;

/// The hold a job is in, if any; leaving it logs the end.
pub struct Holding {
    stalled: IntGaugeVec,
    current: Option<(&'static str, Instant)>,
}

impl Holding {
    /// Not holding, over the job's `stalled` gauge.
    pub fn new(stalled: &IntGaugeVec) -> Self {
        Self {
            stalled: stalled.clone(),
            current: None,
        }
    }

    /// Holds for `reason` because of `cause`: logs once when the hold starts (or its
    /// reason changes), and sets the gauge.
    pub fn enter(&mut self, reason: &'static str, cause: &dyn std::fmt::Display) {
        if self.current.is_some_and(|(r, _)| r == reason) {
            return;
        }
        self.leave();
        self.stalled.with_label_values(&[reason]).set(1);
        tracing::error!(
            reason,
            %cause,
            "held: the stream waits (nothing is skipped or committed past it) until this clears"
        );
        self.current = Some((reason, Instant::now()));
    }

    /// Ends the hold, if any: logs its duration and clears the gauge.
    pub fn leave(&mut self) {
        if let Some((reason, since)) = self.current.take() {
            self.stalled.with_label_values(&[reason]).set(0);
            let held_s = since.elapsed().as_secs_f64();
            tracing::warn!(
                reason,
                held_s,
                "resumed: the hold for {reason} lasted {held_s:.1} s"
            );
        }
    }
}

/// Dropped while holding (shutdown): the gauge is cleared, but nothing resumed, so
/// nothing is logged.
impl Drop for Holding {
    fn drop(&mut self) {
        if let Some((reason, _)) = self.current.take() {
            self.stalled.with_label_values(&[reason]).set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_sets_its_gauge_until_it_ends_and_a_new_reason_replaces_the_old() {
        let gauge = IntGaugeVec::new(prometheus::Opts::new("s", "s"), &["reason"]).unwrap();
        let value = |r: &str| gauge.with_label_values(&[r]).get();
        let mut holding = Holding::new(&gauge);
        holding.enter("index", &"dup");
        holding.enter("index", &"dup again");
        assert_eq!(value("index"), 1);
        holding.enter("mongo-refused", &"no rights");
        assert_eq!((value("index"), value("mongo-refused")), (0, 1));
        drop(holding);
        assert_eq!(value("mongo-refused"), 0);
    }
}
