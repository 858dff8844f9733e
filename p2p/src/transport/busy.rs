//! How a fetch answers `Busy` replies to its first request of one holder
//! (see [`BusyBackoff`]).
//!
//! Invariant: a holder that answers `Busy` at once forever is given up
//! after [`MAX_QUICK_BUSY`] quick answers, a few seconds in all.

use std::time::Duration;

/// A `Busy` answer that came back sooner than this is *quick*: an honest
/// holder says `Busy` to a first request only after waiting
/// `rpc::PENDING_WAIT` (1 s) for the object's task, so a quick one means a
/// holder over its byte budget or one that stalls on purpose.
pub(crate) const QUICK_BUSY: Duration = Duration::from_millis(500);

/// Quick `Busy` answers from one holder before it is given up.
pub(crate) const MAX_QUICK_BUSY: u32 = 8;

/// The pause after the first quick `Busy`; it doubles with each one after
/// (10 ms, 20 ms, ... 1.28 s: about 2.5 s in all before the holder is given
/// up).
pub(crate) const FIRST_BUSY_PAUSE: Duration = Duration::from_millis(10);

/// How `pull` answers `Busy` replies to its first request of one holder. A
/// slow `Busy` (the holder waited for the object's task) is asked again at
/// once and without limit, as `get` blocks until the task ends (Ray's
/// semantics; a `get` with a timeout bounds it). A quick one is asked again
/// after a pause that doubles each time, and after [`MAX_QUICK_BUSY`] of
/// them the holder fails as busy and the next holder is
/// tried: a holder that answers `Busy` at once forever costs a fetch a few
/// requests and seconds, not a request loop.
#[derive(Debug, Default)]
pub(crate) struct BusyBackoff {
    /// Quick `Busy` answers so far.
    pub(crate) quick: u32,
}

impl BusyBackoff {
    /// After a `Busy` that came `waited` after the request: how long to
    /// pause before asking again, or `None` to give the holder up.
    pub(crate) fn after(&mut self, waited: Duration) -> Option<Duration> {
        if waited >= QUICK_BUSY {
            return Some(Duration::ZERO);
        }
        self.quick += 1;
        if self.quick > MAX_QUICK_BUSY {
            return None;
        }
        Some(FIRST_BUSY_PAUSE.saturating_mul(1 << (self.quick - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_busy_is_asked_again_at_once_without_limit() {
        let mut b = BusyBackoff::default();
        for _ in 0..1000 {
            assert_eq!(b.after(Duration::from_secs(1)), Some(Duration::ZERO));
        }
    }

    #[test]
    fn quick_busy_backs_off_then_gives_up() {
        let mut b = BusyBackoff::default();
        let pauses: Vec<_> = std::iter::from_fn(|| b.after(Duration::from_millis(1))).collect();
        assert_eq!(pauses.len(), MAX_QUICK_BUSY as usize);
        assert_eq!(pauses[0], FIRST_BUSY_PAUSE);
        assert!(pauses.windows(2).all(|w| w[1] == w[0] * 2), "{pauses:?}");
        let total: Duration = pauses.iter().sum();
        assert!(total < Duration::from_secs(5), "given up within seconds: {total:?}");
        // A slow one in between does not reset the count: a holder cannot
        // stretch the quick budget by mixing them in.
        let mut b = BusyBackoff::default();
        for _ in 0..MAX_QUICK_BUSY {
            assert!(b.after(Duration::ZERO).is_some());
            assert_eq!(b.after(QUICK_BUSY), Some(Duration::ZERO));
        }
        assert_eq!(b.after(Duration::ZERO), None);
    }
}
