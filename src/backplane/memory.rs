//! The in-memory backplane: nodes in one process (tests, or several hubs on one machine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::{Backplane, BackplaneError, Envelope};

/// Envelopes a slow node may fall behind before it loses the oldest.
const CAPACITY: usize = 4096;

/// Connects every [`Node`](super::Node) built on a clone of it. Cheap to clone.
///
/// A node whose delivery task falls more than 4 096 envelopes behind loses the oldest ones;
/// they are counted ([`InMemoryBackplane::lost`]) and logged.
#[derive(Debug, Clone)]
pub struct InMemoryBackplane {
    tx: broadcast::Sender<Envelope>,
    lost: Arc<AtomicU64>,
}

impl Default for InMemoryBackplane {
    fn default() -> Self {
        InMemoryBackplane::new()
    }
}

impl InMemoryBackplane {
    /// A new, empty bus.
    pub fn new() -> Self {
        InMemoryBackplane {
            tx: broadcast::channel(CAPACITY).0,
            lost: Arc::default(),
        }
    }

    /// Envelopes lost by nodes on this bus that fell too far behind, in all.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Backplane for InMemoryBackplane {
    fn publish(&self, envelope: Envelope) -> Result<(), BackplaneError> {
        // No subscriber is not an error: there is simply no other node yet.
        let _ = self.tx.send(envelope);
        Ok(())
    }

    fn subscribe(&self, tx: mpsc::Sender<Envelope>) {
        let mut rx = self.tx.subscribe();
        let lost = self.lost.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(envelope) => {
                        if tx.send(envelope).await.is_err() {
                            return; // the node is gone
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        lost.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(lost = n, "in-memory backplane: node fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}
