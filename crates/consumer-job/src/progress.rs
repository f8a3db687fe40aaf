//! How far a long walk got, for the person who started it: an indicatif bar on a
//! terminal, and a plain line at most every 5 s otherwise (a pod's log has no terminal and
//! no use for carriage returns). One-shot `reconcile` shows one per plant; a
//! `reconcile --watch` run from a terminal shows its current pass the same way.

use std::{
    io::{IsTerminal, Write as _},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress of one plant's walk over about `total` images.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    last_line: Instant,
}

impl Progress {
    /// A bar when standard error is a terminal, else plain lines. `total` is an estimate
    /// (the collection's count when the walk starts): the bar grows past it if need be.
    pub fn new(label: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:<8} [{bar:30}] {pos}/{len} images, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>.");
            bar.set_style(style);
            bar.set_prefix(label.to_owned());
            bar
        });
        Self {
            bar,
            label: label.to_owned(),
            total,
            last_line: Instant::now(),
        }
    }

    /// `done` images checked so far.
    pub fn set(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(self.total.max(done));
                bar.set_position(done);
            }
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}: {done}/{} images checked",
                    self.label,
                    self.total
                );
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    /// The walk ended after `done` images: the bar gives way to one line.
    pub fn finish(self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let _ = writeln!(std::io::stderr(), "{}: {done} images checked", self.label);
    }
}
