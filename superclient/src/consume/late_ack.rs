//! When a partition worker acks what it committed. The consumer acks every earlier event with
//! the last one (`AckAll`), so one ack can cover several batches: a worker keeps the last
//! committed delivery and acks it once `--ack-linger` has passed since the oldest unacked commit, or
//! once half of what the consumer lets it hold is committed and unacked (the consumer stops
//! delivering at `max_ack_pending`), or before anything that reads or moves the consumer's
//! state (a resync, a pause, a new pull stream, a hand-over).
//!
//! An event is acked only after its commit, and one delivered again (its ack had not arrived
//! when its worker died) is at or below the checkpoint and skipped. When the state is rebuilt
//! after Redis lost it, the rebuild replays each partition up to its consumer's ack floor; what
//! was committed to the lost state but not acked yet is delivered again by the worker, which
//! finds its checkpoint moved back and resets the consumer to it (`consume::worker`).
//! At a few events per second per partition, one ack per event becomes one per linger (2 NATS
//! messages fewer per bank transfer).

use std::time::Duration;
use tokio::time::Instant;

/// The committed, not yet acked deliveries of one worker: the last one (`M`, whose ack covers
/// the others), how many, and since when.
#[derive(Debug)]
pub struct LateAck<M> {
    last: Option<M>,
    count: usize,
    since: Option<Instant>,
    /// Acked at once when this many are waiting.
    limit: usize,
    /// How long a committed event may wait for its ack (zero: acked at once).
    linger: Duration,
}

impl<M> LateAck<M> {
    /// `limit`: half the events the consumer lets the worker hold unacked.
    pub fn new(limit: usize, linger: Duration) -> LateAck<M> {
        LateAck { last: None, count: 0, since: None, limit: limit.max(1), linger }
    }

    /// Notes `n` more committed deliveries, `last` the latest. True when they should be acked now.
    pub fn hold(&mut self, last: M, n: usize, now: Instant) -> bool {
        self.last = Some(last);
        self.count += n;
        self.since.get_or_insert(now);
        self.count >= self.limit || self.linger.is_zero()
    }

    /// When the waiting ones are due (None: nothing waits).
    pub fn due(&self) -> Option<Instant> {
        self.since.map(|s| s + self.linger)
    }

    /// The delivery to ack now, if any waits (and forgets it).
    pub fn take(&mut self) -> Option<M> {
        self.count = 0;
        self.since = None;
        self.last.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(100);

    #[test]
    fn acks_the_latest_once_the_limit_is_reached() {
        let now = Instant::now();
        let mut late = LateAck::new(4, LINGER);
        assert!(!late.hold(1, 1, now));
        assert!(!late.hold(2, 2, now + Duration::from_millis(10)));
        assert!(late.hold(3, 1, now + Duration::from_millis(20)), "4 waiting: ack now");
        assert_eq!(late.take(), Some(3), "the latest covers the others");
        assert_eq!(late.take(), None, "nothing waits after an ack");
        assert_eq!(late.due(), None);
    }

    #[test]
    fn the_oldest_commit_sets_when_they_are_due() {
        let now = Instant::now();
        let mut late = LateAck::new(100, LINGER);
        assert_eq!(late.due(), None);
        late.hold("a", 1, now);
        late.hold("b", 1, now + Duration::from_millis(60));
        assert_eq!(late.due(), Some(now + LINGER), "a later commit does not push the ack back");
        assert_eq!(late.take(), Some("b"));
        late.hold("c", 1, now + Duration::from_millis(70));
        assert_eq!(late.due(), Some(now + Duration::from_millis(70) + LINGER), "the clock starts again after an ack");
    }

    #[test]
    fn a_limit_of_zero_acks_every_commit() {
        let mut late = LateAck::new(0, LINGER);
        assert!(late.hold((), 1, Instant::now()));
    }

    #[test]
    fn no_linger_acks_every_commit() {
        let mut late = LateAck::new(100, Duration::ZERO);
        assert!(late.hold((), 1, Instant::now()));
    }
}
