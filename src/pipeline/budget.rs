//! The reading budget: how long reading one message may take. Reading is
//! linear in the size of a message by construction (see
//! `extract/html.rs` and `extract/quotes.rs`); the budget is the backstop for
//! what that construction missed. The long passes ask [`exhausted`] every
//! few thousand steps and stop early when it says so; the pipeline then
//! holds the message (`reading_failed`, kept as it arrived) instead of
//! posting a text cut short.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static OVERRUN: Cell<bool> = const { Cell::new(false) };
}

/// Reading ran over its budget: what was read is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun;

/// Runs `read` (on this thread) with `limit` to spend; `Err(Overrun)` when
/// a pass found the time spent and stopped early.
pub fn within<T>(limit: Duration, read: impl FnOnce() -> T) -> Result<T, Overrun> {
    let outer = DEADLINE.with(|d| d.replace(Some(Instant::now() + limit)));
    let outer_overrun = OVERRUN.with(|o| o.replace(false));
    let result = read();
    let overrun = OVERRUN.with(|o| o.replace(outer_overrun));
    DEADLINE.with(|d| d.set(outer));
    if overrun { Err(Overrun) } else { Ok(result) }
}

/// Whether the reading under way has spent its budget (never, outside
/// [`within`]). A pass that sees `true` stops.
pub fn exhausted() -> bool {
    let spent = DEADLINE.with(Cell::get).is_some_and(|deadline| Instant::now() >= deadline);
    if spent {
        OVERRUN.with(|o| o.set(true));
    }
    spent
}

#[cfg(test)]
mod tests {
    use super::{Overrun, exhausted, within};
    use std::time::Duration;

    #[test]
    fn a_pass_that_runs_over_is_reported_and_the_next_reading_starts_afresh() {
        assert!(!exhausted(), "no budget outside a reading");
        let over = within(Duration::ZERO, || {
            let mut steps = 0;
            while !exhausted() {
                steps += 1;
            }
            steps
        });
        assert_eq!(over, Err(Overrun));
        assert_eq!(within(Duration::from_secs(60), exhausted), Ok(false));
    }
}
