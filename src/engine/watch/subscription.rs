//! One WatchCompliance stream's position: a snapshot, then catching up from the journal's
//! ring, then live events in its own bounded buffer; each event once, in cursor order.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, watch};

use super::journal::Fetch;
use super::{Cause, RESYNC, StreamSlot, WatchEvent, Watcher};
use crate::error::{Error, Result};

pub(super) enum Phase {
    /// The snapshot's events, then catching up from `head`, the position they reflect.
    Snapshot {
        items: std::vec::IntoIter<Arc<WatchEvent>>,
        head: u64,
    },
    /// Reading the ring after `after`.
    CatchUp {
        after: u64,
    },
    /// Registered: live events arrive in the bounded buffer.
    Live {
        rx: mpsc::Receiver<Arc<WatchEvent>>,
        overflowed: Arc<AtomicBool>,
    },
    Done,
}

/// One stream's position: yields its events in cursor order, each once.
pub struct Subscription {
    watcher: Arc<Watcher>,
    /// Its place among the open streams, given back when the stream is dropped.
    _slot: StreamSlot,
    /// False once this replica cannot vouch for its data: the stream ends, to resume elsewhere.
    available: watch::Receiver<bool>,
    filter: Option<Arc<HashSet<String>>>,
    phase: Phase,
    /// Events read from the ring, not yet yielded.
    pending: VecDeque<Arc<WatchEvent>>,
    /// The cursor up to which every event for this stream has been yielded: where a client
    /// can resume. `None` while a snapshot is incomplete.
    position: Option<u64>,
    started_from_revision: bool,
}

impl Subscription {
    pub(super) fn new(
        slot: StreamSlot,
        filter: Option<Arc<HashSet<String>>>,
        phase: Phase,
        position: Option<u64>,
        started_from_revision: bool,
    ) -> Self {
        let watcher = slot.watcher.clone();
        let available = watcher.engine.available();
        Subscription {
            watcher,
            _slot: slot,
            available,
            filter,
            phase,
            pending: VecDeque::new(),
            position,
            started_from_revision,
        }
    }

    /// The next event; an error ends the stream; `None` when the server shuts down.
    pub async fn next(&mut self) -> Option<Result<Arc<WatchEvent>>> {
        loop {
            if !matches!(self.phase, Phase::Done) && !*self.available.borrow_and_update() {
                self.phase = Phase::Done;
                return Some(Err(self.unavailable()));
            }
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Snapshot { items, head } => {
                    let head = *head;
                    match items.next() {
                        Some(current) => {
                            // Only the last snapshot event is a resume point.
                            let cursor = if items.len() == 0 { head } else { 0 };
                            if cursor != 0 {
                                self.position = Some(cursor);
                            }
                            return Some(Ok(Arc::new(WatchEvent {
                                cursor,
                                cause: Cause::Snapshot,
                                snapshot: true,
                                ..(*current).clone()
                            })));
                        }
                        None => self.phase = Phase::CatchUp { after: head },
                    }
                }
                Phase::CatchUp { after } => {
                    if let Some(event) = self.pending.pop_front() {
                        self.position = Some(event.cursor);
                        return Some(Ok(event));
                    }
                    let buffer = self.watcher.config.buffer;
                    match self.watcher.journal.lock().fetch(*after, &self.filter, buffer, &mut self.pending) {
                        Fetch::Scanned { through } => *after = through,
                        Fetch::Live { rx, overflowed } => self.phase = Phase::Live { rx, overflowed },
                        Fetch::Evicted { oldest } => {
                            self.phase = Phase::Done;
                            return Some(Err(Error::OutOfRange(format!(
                                "this stream fell behind the events this server retains (the oldest is now cursor \
                                 {oldest}) and was ended; {RESYNC}"
                            ))));
                        }
                        Fetch::Closed => {
                            self.phase = Phase::Done;
                            return Some(Err(self.shutting_down()));
                        }
                    }
                }
                Phase::Live { rx, overflowed } => {
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        // Looked at again at the top of the loop.
                        changed = self.available.changed() => match changed {
                            Ok(()) => continue,
                            Err(_) => None, // the engine is gone: shutting down
                        },
                    };
                    if !overflowed.load(Ordering::Acquire)
                        && let Some(event) = next
                    {
                        self.position = Some(event.cursor);
                        return Some(Ok(event));
                    }
                    let overflowed = overflowed.load(Ordering::Acquire);
                    self.phase = Phase::Done;
                    if !overflowed {
                        return Some(Err(self.shutting_down()));
                    }
                    return Some(Err(self.too_slow()));
                }
            }
        }
    }

    fn unavailable(&self) -> Error {
        let resume = match self.position {
            Some(cursor) => format!("every event up to cursor {cursor} was delivered; "),
            None => String::new(),
        };
        let message = self.watcher.engine.check_available().err().map(|e| e.to_string()).unwrap_or_default();
        Error::Unavailable(format!("{message}; {resume}resubscribe to another replica with from_revision"))
    }

    /// The server closed its streams: it is shutting down.
    fn shutting_down(&self) -> Error {
        let resume = match self.position {
            Some(cursor) => format!("every event up to cursor {cursor} was delivered; "),
            None => String::new(),
        };
        Error::Unavailable(format!(
            "this server is shutting down; {resume}resubscribe to another replica with from_revision"
        ))
    }

    fn too_slow(&self) -> Error {
        let behind = self.watcher.config.buffer;
        Error::ResourceExhausted(match self.position {
            Some(cursor) => format!(
                "this stream fell more than {behind} events behind and was ended; every event up to cursor {cursor} \
                 was delivered: resubscribe with after_cursor {cursor} to continue"
            ),
            None if self.started_from_revision => format!(
                "this stream fell more than {behind} events behind during its snapshot and was ended; resubscribe \
                 as before (the same from_revision, or every_device)"
            ),
            None => format!("this stream fell more than {behind} events behind and was ended"),
        })
    }
}
