//! `wait` and `get_all`: waiting on many objects at once, without spinning.
//!
//! Both register one [`WaitGroup`] on every pending object; each completion
//! bumps its counter and wakes the caller only when the target is reached
//! (or, for `get_all`, when any object fails). After waking, the caller
//! re-scans the objects' states, which are monotone (a done object stays
//! done), so the result never depends on the order of notifications.
//! Registrations still pending at the end (timeout) are removed.

use crate::cell::{thread_parker, ObjectCell};
use crate::error::Error;
use crate::notify::{WaitGroup, Waiter};
use crate::refs::{ObjectRef, Waitable};
use crate::scheduler::{block_until, spin_until};
use crate::slot::Value;
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Registers a group on every pending cell and blocks until `stop`
/// holds. `stop` is given the group once it exists (`None` while spinning
/// first), so it can read the group's counts instead of scanning every
/// cell again after each wake-up. Returns whether `stop` held at the end.
fn wait_cells(
    cells: &[&Arc<ObjectCell>],
    target: usize,
    deadline: Option<Instant>,
    stop: &mut dyn FnMut(Option<&WaitGroup>) -> bool,
) -> bool {
    if spin_until(&mut || stop(None)) {
        return true;
    }
    // Every cell counts exactly once towards the group's target: through
    // its registration's notification, or at once if it is already done
    // (the registration is refused). Counting done cells in a separate scan
    // first would miss the ones that complete between the scan and the
    // registration loop, and the group would never reach its target.
    let parker = thread_parker();
    let group = WaitGroup::new(target, 0, parker.clone());
    let mut tokens = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        c.demand();
        match c.slot.register(Waiter::Group(group.clone())) {
            Ok(t) => tokens.push((i, t)),
            Err(_) => group.arrive(!c.slot.is_failed()),
        }
    }
    let mut next = 0;
    let mut target = || {
        // Round-robin over the pending objects' queued jobs.
        for _ in 0..cells.len() {
            let c = cells[next % cells.len()];
            next += 1;
            if !c.slot.is_done() {
                if let Some(job) = c.queued_producer() {
                    return Some(job);
                }
            }
        }
        None
    };
    // Cancelled tasks still queued behind busy runners end now, not when a
    // runner frees (see `parked`).
    let _parked = crate::parked::ParkedReader::enter();
    for c in cells.iter().filter(|c| !c.slot.is_done()) {
        c.finish_if_cancelled();
    }
    let done = block_until(&parker, deadline, &mut target, &mut || stop(Some(&group)));
    for (i, t) in tokens {
        if !cells[i].slot.is_done() {
            cells[i].slot.deregister(t);
        }
    }
    done
}

pub(crate) fn wait<R: Waitable>(
    refs: &[R],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<(Vec<R>, Vec<R>), Error> {
    if refs.is_empty() {
        // As Ray: an empty list is answered at once, before `num_returns`
        // is checked (`ray.wait([])` returns `([], [])`).
        return Ok((Vec::new(), Vec::new()));
    }
    if num_returns == 0 {
        return Err(Error::invalid("wait: num_returns must be at least 1"));
    }
    if num_returns > refs.len() {
        return Err(Error::invalid(format!(
            "wait: num_returns ({num_returns}) is larger than the number of refs ({})",
            refs.len()
        )));
    }
    let mut ids: Vec<_> = refs.iter().map(|r| r.as_any_ref().cell.id()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid("wait: the list of refs contains duplicates"));
    }
    let cells: Vec<&Arc<ObjectCell>> = refs.iter().map(|r| &r.as_any_ref().cell).collect();
    let count = |cells: &[&Arc<ObjectCell>]| cells.iter().filter(|c| c.slot.is_done()).count();
    let poll = timeout == Some(Duration::ZERO);
    if !poll && count(&cells) < num_returns {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // Once the group is registered its count is exact (every cell
        // arrives once: at registration if already done, else when done).
        wait_cells(&cells, num_returns, deadline, &mut |g| match g {
            Some(g) => g.done() >= num_returns,
            None => count(&cells) >= num_returns,
        });
    }
    let mut ready = Vec::with_capacity(num_returns);
    let mut pending = Vec::with_capacity(refs.len());
    for r in refs {
        if ready.len() < num_returns && r.as_any_ref().cell.slot.is_done() {
            ready.push(r.clone());
        } else {
            pending.push(r.clone());
        }
    }
    Ok((ready, pending))
}

pub(crate) fn get_all<T: Any + Send + Sync>(
    refs: &[ObjectRef<T>],
    deadline: Option<(Instant, Duration)>,
) -> Result<Vec<Arc<T>>, Error> {
    // Duplicates need no removing: each registration counts once towards
    // the group's target, so the target is simply the list's length (and
    // a list of 100k refs is not sorted just to wait on it).
    let cells: Vec<&Arc<ObjectCell>> = refs.iter().map(|r| r.cell()).collect();
    let first_error = || refs.iter().find(|r| r.cell().slot.is_failed()).and_then(|r| r.cell().slot.read()?.err());
    // States are monotone, so `settled` keeps a cursor at the first cell
    // not yet done instead of rescanning the list on every check; a
    // failure anywhere shows as the group's failed flag (a failed cell
    // arrives with ok = false, at registration or when it fails).
    let first_pending = std::cell::Cell::new(0);
    let settled = || {
        let mut i = first_pending.get();
        while i < cells.len() && cells[i].slot.is_done() {
            if cells[i].slot.is_failed() {
                return true;
            }
            i += 1;
        }
        first_pending.set(i);
        i == cells.len()
    };
    if !settled() {
        // Only the cells from the first pending one on are waited for (the
        // ones before it are done, and states are monotone).
        let rest = cells.get(first_pending.get()..).unwrap_or_default();
        let finished = wait_cells(rest, rest.len(), deadline.map(|d| d.0), &mut |g| {
            settled() || g.is_some_and(|g| g.any_failed())
        });
        if !finished {
            return Err(Error::Timeout(deadline.map_or(Duration::MAX, |d| d.1)));
        }
    }
    // The cursor passed every cell only over cells done without an error:
    // then no scan for the first error (a pass over the whole list, one
    // cache miss per object in a long one). A cell freed since fails its
    // read below.
    let clean = first_pending.get() == cells.len();
    if let Some(e) = (!clean).then(first_error).flatten() {
        // The caller asked for every ref of the list and handled their
        // failure through this error: none of them is an error nobody read
        // (Ray's `ray.get([x1, x2])` reports neither), including refs
        // still pending that fail later.
        refs.iter().for_each(|r| r.cell().slot.mark_read());
        return Err(e);
    }
    refs.iter()
        .map(|r| match r.cell().read_value() {
            Some(o) => o.and_then(Value::downcast::<T>),
            None => Err(Error::invalid("object not done")),
        })
        .collect()
}
