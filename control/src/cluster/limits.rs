//! The node's admission switches, changed at run time (ModuleService `Configure`, `Shutdown`,
//! EntityService `ConfigureEntity`): drain, and the ceilings new sessions are checked against.
//! Plain atomics for the node-wide ones: every WHIP/WHEP request reads them, nothing holds
//! them. Per-stream viewer ceilings sit in a small map read once per viewer POST.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// `u32::MAX` stands for "no limit" in the atomics.
const UNLIMITED: u32 = u32::MAX;

/// What the node admits now.
#[derive(Debug)]
pub struct NodeLimits {
    draining: AtomicBool,
    max_viewers: AtomicU32,
    max_publishers: AtomicU32,
    /// End-viewer ceilings of single streams, by name. They outlive a publish, so a stream
    /// that restarts keeps its ceiling.
    stream_max_viewers: Mutex<HashMap<String, u32>>,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            max_viewers: AtomicU32::new(UNLIMITED),
            max_publishers: AtomicU32::new(UNLIMITED),
            stream_max_viewers: Mutex::default(),
        }
    }
}

fn get(a: &AtomicU32) -> Option<u32> {
    Some(a.load(Ordering::Relaxed)).filter(|&v| v != UNLIMITED)
}

impl NodeLimits {
    /// Whether the node refuses every new session.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or stops draining; returns the previous state.
    pub fn set_draining(&self, on: bool) -> bool {
        self.draining.swap(on, Ordering::Relaxed)
    }

    /// The end-viewer ceiling (`Some(0)`: no end viewers, only relay pulls); `None`: unlimited.
    pub fn max_viewers(&self) -> Option<u32> {
        get(&self.max_viewers)
    }

    /// Sets the end-viewer ceiling.
    pub fn set_max_viewers(&self, max: Option<u32>) {
        self.max_viewers.store(
            max.unwrap_or(UNLIMITED).min(UNLIMITED - 1),
            Ordering::Relaxed,
        );
    }

    /// The publisher ceiling; `None`: unlimited.
    pub fn max_publishers(&self) -> Option<u32> {
        get(&self.max_publishers)
    }

    /// Sets the publisher ceiling.
    pub fn set_max_publishers(&self, max: Option<u32>) {
        self.max_publishers.store(
            max.unwrap_or(UNLIMITED).min(UNLIMITED - 1),
            Ordering::Relaxed,
        );
    }

    /// The end-viewer ceiling of `stream`; `None`: only the node's.
    pub fn stream_max_viewers(&self, stream: &str) -> Option<u32> {
        self.stream_caps().get(stream).copied()
    }

    /// Sets (or with `None` lifts) the end-viewer ceiling of `stream`.
    pub fn set_stream_max_viewers(&self, stream: &str, max: Option<u32>) {
        let mut caps = self.stream_caps();
        match max {
            Some(n) => caps.insert(stream.to_owned(), n),
            None => caps.remove(stream),
        };
    }

    fn stream_caps(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.stream_max_viewers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
