//! What one session's trickle-ICE `PATCH`es may cost: a bounded fragment, a bounded rate, a
//! bounded number of remote candidates.
//!
//! Each candidate is added on the shard's thread, where the ICE agent compares it with every
//! candidate it holds: unbounded, one 64 KiB PATCH added ~600 and a client could send such
//! PATCHes as fast as it liked. Real clients send a handful of candidates (host addresses,
//! a reflexive and a relay one per interface), in one PATCH or a few.
//! - A fragment is at most [`MAX_FRAGMENT_BYTES`].
//! - PATCHes per session: a bucket of [`PATCH_BURST`], refilled at [`PATCHES_PER_SEC`].
//! - Remote candidates per session: at most [`MAX_REMOTE_CANDIDATES`]. An ICE restart clears
//!   the agent's remote candidates, and so the count.
//!
//! Sans-IO: the time comes in.

use std::time::Instant;

/// The largest trickle fragment accepted (a fragment of 32 candidates is about 3 KiB).
pub const MAX_FRAGMENT_BYTES: usize = 8 * 1024;
/// Remote candidates one session may add since its offer or its last ICE restart.
pub const MAX_REMOTE_CANDIDATES: usize = 32;
/// PATCHes a session may send at once.
pub const PATCH_BURST: f64 = 16.0;
/// PATCHes a second a session may send on average.
pub const PATCHES_PER_SEC: f64 = 4.0;

/// Why the shard did not apply a fragment with credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatchRefused {
    /// The session is gone.
    Ended,
    /// The session's own credentials (a trickle, not a restart) with candidates past the cap.
    TooManyCandidates,
    /// Credentials or candidates the ICE agent refused.
    Invalid(String),
}

/// A PATCH past the session's rate; a token is there after this many milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooFast {
    pub retry_ms: u64,
}

/// One session's trickle state. Candidates are counted when a PATCH is admitted, before the
/// shard adds them, so two PATCHes at once cannot both fit under the cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrickleBudget {
    candidates: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Default for TrickleBudget {
    fn default() -> Self {
        Self {
            candidates: 0,
            tokens: PATCH_BURST,
            refilled: None,
        }
    }
}

impl TrickleBudget {
    /// Takes one PATCH from the session's rate.
    pub(crate) fn patch(&mut self, now: Instant) -> Result<(), TooFast> {
        if let Some(t) = self.refilled {
            let refill = now.saturating_duration_since(t).as_secs_f64() * PATCHES_PER_SEC;
            self.tokens = (self.tokens + refill).min(PATCH_BURST);
        }
        self.refilled = Some(now);
        if self.tokens < 1.0 {
            let retry_ms = ((1.0 - self.tokens) / PATCHES_PER_SEC * 1000.0).ceil() as u64;
            return Err(TooFast { retry_ms });
        }
        self.tokens -= 1.0;
        Ok(())
    }

    /// Counts `candidates` more if they fit under the cap; whether they did.
    pub(crate) fn reserve(&mut self, candidates: usize) -> bool {
        let fits = self.candidates + candidates <= MAX_REMOTE_CANDIDATES;
        if fits {
            self.candidates += candidates;
        }
        fits
    }

    /// An ICE restart cleared the remote candidates; these are the ones it came with.
    pub(crate) fn restarted(&mut self, candidates: usize) {
        self.candidates = candidates;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn candidates_are_capped_until_a_restart() {
        let mut b = TrickleBudget::default();
        assert!(b.reserve(30));
        assert!(b.reserve(2));
        assert!(!b.reserve(1));
        // One 64 KiB fragment's worth at once: refused whole, nothing counted.
        let mut fresh = TrickleBudget::default();
        assert!(!fresh.reserve(600));
        assert!(fresh.reserve(MAX_REMOTE_CANDIDATES));
        // A restart starts the count again.
        b.restarted(20);
        assert!(b.reserve(12));
        assert!(!b.reserve(1));
    }

    #[test]
    fn patches_are_rate_limited() {
        let mut b = TrickleBudget::default();
        let t = Instant::now();
        for _ in 0..PATCH_BURST as usize {
            assert_eq!(b.patch(t), Ok(()));
        }
        assert_eq!(b.patch(t), Err(TooFast { retry_ms: 250 }));
        assert!(b.patch(t + Duration::from_millis(100)).is_err());
        assert_eq!(b.patch(t + Duration::from_millis(260)), Ok(()));
        // Refilled, never past the burst.
        let later = t + Duration::from_secs(60);
        for _ in 0..PATCH_BURST as usize {
            assert_eq!(b.patch(later), Ok(()));
        }
        assert!(b.patch(later).is_err());
    }
}
