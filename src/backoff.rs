//! Retry delays, one policy for every retry loop: a delay that doubles with each failure in a
//! row up to a cap, spread by jitter so that many retrying at once do not retry in lockstep.
//!
//! ```text
//!   failures in a row ──> start · 2^(failures−1), at most max ──> jitter ──> the wait
//! ```
//!
//! Used by a cluster's applies and the outbox of commit statuses (±20 %), the listener's failed
//! accepts (none), and the Kubernetes store's conflicting writes (full jitter, as client-go's
//! RetryOnConflict). Pure apart from the random numbers.

use std::time::Duration;

/// How a delay is spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Jitter {
    /// Exactly the delay.
    None,
    /// The delay ± this fraction of it, uniformly.
    Spread(f64),
    /// Anywhere from nothing to the delay, uniformly ("full jitter").
    Full,
}

/// A retry policy: the first wait, the longest, and the jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub start: Duration,
    pub max: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    pub const fn new(start: Duration, max: Duration, jitter: Jitter) -> Backoff {
        Backoff { start, max, jitter }
    }

    /// The wait before jitter after `failures` failures in a row (1: the first failure; 0 is
    /// taken as 1): `start` doubled `failures − 1` times, at most `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.start.checked_mul(1u32 << doublings).map_or(self.max, |d| d.min(self.max))
    }

    /// The wait after `failures` failures in a row, jittered.
    pub fn delay(&self, failures: u32) -> Duration {
        jitter(self.ceiling(failures), self.jitter)
    }
}

/// `base` spread as `how` says.
pub fn jitter(base: Duration, how: Jitter) -> Duration {
    match how {
        Jitter::None => base,
        Jitter::Spread(fraction) => base.mul_f64(1.0 - fraction + fastrand::f64() * 2.0 * fraction),
        Jitter::Full => base.mul_f64(fastrand::f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_start_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), Jitter::None);
        let ms = |f| b.delay(f).as_millis();
        assert_eq!([ms(0), ms(1), ms(2), ms(7), ms(8), ms(u32::MAX)], [10, 10, 20, 640, 1000, 1000]);
        let huge = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::from_secs(300), Jitter::None);
        assert_eq!(huge.delay(40), Duration::from_secs(300), "an overflow is the cap");
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let base = Duration::from_secs(10);
        for _ in 0..1000 {
            let spread = jitter(base, Jitter::Spread(0.2)).as_secs_f64();
            assert!((8.0..=12.0).contains(&spread), "{spread}");
            assert!(jitter(base, Jitter::Full) <= base);
        }
    }
}
