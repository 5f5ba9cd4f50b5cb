//! The feed of commits: LISTEN on the schema's channel, on a connection of its own, forwarded
//! to the engine until it lets go, reconnecting when the connection is lost.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc::{self, Receiver, Sender, error::TrySendError};

use crate::error::Result;

/// Notifications a slow receiver may leave unread before further ones are dropped. Dropping
/// loses nothing: each value only says "read `changes_since`", and the unread ones will.
/// Blocking instead would let one slow receiver fill PostgreSQL's notification queue, which
/// makes every replica's commits fail.
const NOTIFICATION_BUFFER: usize = 1024;
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Listens on `channel` (it is listening when this returns) and forwards its revisions.
pub(super) async fn feed(connect: PgConnectOptions, channel: String) -> Result<Receiver<u64>> {
    // A pool of one for the listener, so it neither takes a connection from the store's pool
    // for good nor is closed with it; the listener reconnects through it.
    let pool = PgPoolOptions::new().max_connections(1).max_lifetime(None).idle_timeout(None).connect_lazy_with(connect);
    let listener = listen(&pool, &channel).await?;
    let (sender, receiver) = mpsc::channel(NOTIFICATION_BUFFER);
    tokio::spawn(forward(pool, listener, channel, sender));
    Ok(receiver)
}

async fn listen(pool: &PgPool, channel: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Sends `revision` unless the receiver is full (it has unread values, which will make it
/// re-read the log anyway). False once the receiver is gone.
fn signal(sender: &Sender<u64>, revision: u64) -> bool {
    !matches!(sender.try_send(revision), Err(TrySendError::Closed(_)))
}

/// Forwards the channel's revisions until the receiver is dropped. After a lost connection
/// it reconnects (with backoff) and sends the last revision it knew, or 0: "re-check", since
/// notifications sent while it was away are lost.
async fn forward(pool: PgPool, listener: PgListener, channel: String, sender: Sender<u64>) {
    let mut listener = Some(listener);
    let mut last = 0;
    let mut backoff = RECONNECT_MIN;
    loop {
        let Some(active) = listener.as_mut() else {
            tokio::select! {
                _ = sender.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            match listen(&pool, &channel).await {
                Ok(reconnected) => {
                    tracing::info!(channel, "change notifications: listening again");
                    listener = Some(reconnected);
                    backoff = RECONNECT_MIN;
                    if !signal(&sender, last) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "change notifications: cannot reconnect");
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
            continue;
        };
        let next = tokio::select! {
            _ = sender.closed() => return,
            next = active.try_recv() => next,
        };
        let revision = match next {
            Ok(Some(notification)) => match notification.payload().parse::<u64>() {
                Ok(revision) => {
                    last = last.max(revision);
                    revision
                }
                Err(_) => {
                    tracing::warn!(channel, payload = notification.payload(), "change notifications: not a revision");
                    last
                }
            },
            // The connection was lost and has been re-established (listening again).
            Ok(None) => {
                tracing::warn!(channel, "change notifications: connection lost and re-established");
                last
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, "change notifications: connection lost");
                listener = None;
                continue;
            }
        };
        if !signal(&sender, revision) {
            return;
        }
    }
}
