//! The sliding window that enforces a supervisor's restart [`Intensity`].

use std::collections::VecDeque;
use std::time::Instant;

use crate::spec::Intensity;

/// Timestamps of the restarts within the last `period`.
///
/// Bounded: a restart that would make it hold more than `max_restarts + 1` entries is refused (the
/// supervisor then gives up and dies), and entries older than `period` are dropped on every record.
#[derive(Debug)]
pub(crate) struct RestartWindow {
    intensity: Intensity,
    stamps: VecDeque<Instant>,
}

impl RestartWindow {
    pub(crate) fn new(intensity: Intensity) -> Self {
        Self {
            intensity,
            stamps: VecDeque::new(),
        }
    }

    /// Count a restart at `now`. Returns `false` when this restart exceeds the intensity (more than
    /// `max_restarts` within `period`): the caller must give up instead of restarting.
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        self.expire(now);
        self.stamps.push_back(now);
        self.stamps.len() <= self.intensity.max_restarts as usize
    }

    /// Restarts within the period ending at `now`.
    pub(crate) fn in_window(&self, now: Instant) -> usize {
        self.stamps
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.intensity.period)
            .count()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.stamps.front() {
            if now.saturating_duration_since(*oldest) > self.intensity.period {
                self.stamps.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_max_then_refuses() {
        let mut w = RestartWindow::new(Intensity::new(3, Duration::from_secs(5)));
        let t0 = Instant::now();
        assert!(w.record(t0));
        assert!(w.record(t0 + Duration::from_secs(1)));
        assert!(w.record(t0 + Duration::from_secs(2)));
        assert_eq!(w.in_window(t0 + Duration::from_secs(2)), 3);
        assert!(!w.record(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn old_restarts_expire() {
        let mut w = RestartWindow::new(Intensity::new(2, Duration::from_secs(5)));
        let t0 = Instant::now();
        assert!(w.record(t0));
        assert!(w.record(t0 + Duration::from_secs(1)));
        // t0 is now more than 5 s old: only one restart remains in the window.
        assert!(w.record(t0 + Duration::from_secs(6)));
        assert_eq!(w.in_window(t0 + Duration::from_secs(6)), 2);
        assert_eq!(w.in_window(t0 + Duration::from_secs(20)), 0);
    }

    #[test]
    fn zero_means_never_restart() {
        let mut w = RestartWindow::new(Intensity::new(0, Duration::from_secs(5)));
        assert!(!w.record(Instant::now()));
    }
}
