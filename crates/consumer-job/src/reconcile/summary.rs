//! What a run found and did, per plant, and what that means: the summary printed at the
//! end and the exit status.

use std::fmt;

/// What a run found and did in one collection. In a dry run, `copied`, `updated`,
/// `retyped` and `deleted` count what it would do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Producer images looked at.
    pub checked: u64,
    /// Already identical, types included.
    pub in_sync: u64,
    /// Missing in the consumer DB: copied.
    pub copied: u64,
    /// Older (or other values at the same version) in the consumer DB: updated.
    pub updated: u64,
    /// Stored with other BSON types at a version not newer: rewritten.
    pub retyped: u64,
    /// Newer in the consumer DB (the stream got there first): kept.
    pub kept_newer: u64,
    /// Ahead of the producer and of the clock in the consumer DB (a producer with a wrong
    /// clock): replaced by the producer's older version.
    pub future: u64,
    /// Written, yet still different (e.g. a field only the consumer has): left as is.
    pub unrepaired: u64,
    /// Only in the consumer DB.
    pub orphans: u64,
    /// Orphans deleted (`--delete-orphans`).
    pub deleted: u64,
    /// Producer images that could not be read as an image, or that MongoDB refused.
    pub failed: u64,
}

impl Tally {
    /// Differences still there after this run (all of them in a dry run).
    pub fn remaining(&self, dry_run: bool) -> u64 {
        let repairs = if dry_run {
            self.copied + self.updated + self.retyped + self.future
        } else {
            0
        };
        let orphans = if dry_run {
            self.orphans
        } else {
            self.orphans - self.deleted
        };
        repairs + self.unrepaired + orphans
    }
}

/// The summary of a run: one line per plant and the total.
pub struct Summary<'a> {
    /// `(plant, tally)` in run order.
    pub plants: &'a [(String, Tally)],
    /// Whether it was a dry run.
    pub dry_run: bool,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would " } else { "" };
        writeln!(
            f,
            "{:<8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>7} {:>10} {:>8} {:>8} {:>7}",
            "plant",
            "checked",
            "in-sync",
            "copied",
            "updated",
            "retyped",
            "kept-newer",
            "future",
            "unrepaired",
            "orphans",
            "deleted",
            "failed"
        )?;
        for (plant, t) in self.plants {
            writeln!(
                f,
                "{plant:<8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>7} {:>10} {:>8} {:>8} {:>7}",
                t.checked,
                t.in_sync,
                t.copied,
                t.updated,
                t.retyped,
                t.kept_newer,
                t.future,
                t.unrepaired,
                t.orphans,
                t.deleted,
                t.failed
            )?;
        }
        let remaining: u64 = self
            .plants
            .iter()
            .map(|(_, t)| t.remaining(self.dry_run))
            .sum();
        let failed: u64 = self.plants.iter().map(|(_, t)| t.failed).sum();
        let future: u64 = self.plants.iter().map(|(_, t)| t.future).sum();
        if future > 0 {
            writeln!(
                f,
                "future: {future} image(s) in the consumer DB carried an updated_at ahead of the \
                 producer's and of the clock (a producer with a wrong clock); {verb}replaced by \
                 the producer's version although it is older"
            )?;
        }
        if self.dry_run {
            write!(
                f,
                "dry run: nothing changed; {remaining} difference(s) found (copied/updated/retyped/deleted: what it {verb}do)"
            )
        } else {
            write!(
                f,
                "{remaining} difference(s) remain, {failed} image(s) failed"
            )
        }
    }
}

/// The exit status: 1 when images failed, 2 when differences remain (every difference
/// found, in a dry run), else 0.
pub fn exit_code(plants: &[(String, Tally)], dry_run: bool) -> u8 {
    if plants.iter().any(|(_, t)| t.failed > 0) {
        1
    } else if plants.iter().any(|(_, t)| t.remaining(dry_run) > 0) {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_say_failed_then_different_then_in_sync() {
        let clean = Tally {
            checked: 3,
            in_sync: 3,
            ..Tally::default()
        };
        let found = Tally {
            copied: 1,
            ..clean.clone()
        };
        let orphan = Tally {
            orphans: 1,
            ..clean.clone()
        };
        let failed = Tally {
            failed: 1,
            ..clean.clone()
        };
        let plants = |t: &Tally| vec![("potato".to_owned(), t.clone())];
        assert_eq!(exit_code(&plants(&clean), false), 0);
        assert_eq!(exit_code(&plants(&found), false), 0, "repaired");
        assert_eq!(
            exit_code(&plants(&found), true),
            2,
            "a dry run that found one"
        );
        assert_eq!(exit_code(&plants(&orphan), false), 2, "orphans are kept");
        assert_eq!(
            exit_code(
                &plants(&Tally {
                    deleted: 1,
                    ..orphan
                }),
                false
            ),
            0
        );
        assert_eq!(exit_code(&plants(&failed), false), 1);
    }
}
