//! The work layer's event thread: membership changes from the event loop,
//! handled off the swarm's task.
//!
//! The loop sends [`ClusterEvent`]s on one ordered channel: changes (after
//! updating the member table), subscriptions and ticks. This thread acts
//! on each in turn: a dead peer's pins and actors go, work sent to it is
//! placed again (which may submit tasks to the manta runtime) and actors
//! created there restart elsewhere; only then is the change passed to the
//! subscribers (`Node::subscribe`), so a subscriber that hears of a death
//! sees its consequences. A joining (or revived) node may be one that a
//! waiting actor or a task in the backlog needs: those are tried again.
//! A tick drops expired out-of-band pins, sends fenced mail whose wait is
//! over, restarts (or gives up on) waiting actors and places one task of
//! the backlog again. A peer gone (no connection for a failure timeout,
//! not a live member: a raw client, say) loses its pins and the actors it
//! created here.
//!
//! Invariants: changes are handled in the order the loop saw them; a
//! subscriber hears of every change handled after its subscription (which
//! came on the same channel) and of none before it; the thread holds the
//! work only weakly between events and ends when the loop drops its end.

use super::Work;
use crate::cluster::{ClusterEvent, MembershipEvent};
use std::sync::Weak;

/// Starts the event thread of `work`, draining `events`.
pub(super) fn spawn(events: crossbeam_channel::Receiver<ClusterEvent>, work: Weak<Work>) -> std::io::Result<()> {
    std::thread::Builder::new().name("manta-p2p-work".into()).spawn(move || run(&events, &work)).map(|_| ())
}

fn run(events: &crossbeam_channel::Receiver<ClusterEvent>, work: &Weak<Work>) {
    let mut subscribers: Vec<crossbeam_channel::Sender<MembershipEvent>> = Vec::new();
    for ev in events.iter() {
        match ev {
            ClusterEvent::Subscribe(tx) => subscribers.push(tx),
            ClusterEvent::Gone(peer) => {
                if let Some(w) = work.upgrade() {
                    w.peer_gone(peer);
                }
            }
            ClusterEvent::Tick => {
                if let Some(w) = work.upgrade() {
                    w.sweep_sent();
                    w.retry_waiting();
                    w.retry_backlog(1);
                }
            }
            ClusterEvent::Membership(change) => {
                match (&change, work.upgrade()) {
                    (MembershipEvent::Died(peer), Some(w)) => w.peer_died(*peer),
                    // A node with an actor's resources may have come.
                    (MembershipEvent::Joined(_) | MembershipEvent::Revived(_), Some(w)) => {
                        w.retry_waiting();
                        w.retry_backlog(usize::MAX);
                    }
                    (_, None) => {}
                }
                subscribers.retain(|s| s.send(change.clone()).is_ok());
            }
        }
    }
}
