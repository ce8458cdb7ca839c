//! The accept loop: one task and one tracing span per connection, a cap on
//! concurrent connections (`421 4.3.2` beyond it), and a clean stop on
//! shutdown. Never reads message content or the store.

use super::session::{self, SessionContext};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Accepts connections on `listener` until `shutdown` fires; sessions are
/// spawned on `tasks` so that the caller can wait for them to finish.
pub async fn serve(listener: TcpListener, ctx: Arc<SessionContext>, shutdown: CancellationToken, tasks: TaskTracker) {
    let permits = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tasks.spawn(async move {
                let _ = stream.write_all(b"421 4.3.2 Too many connections, please try again later\r\n").await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let Some(ip_slot) = IpSlot::take(&per_ip, peer.ip(), ctx.limits.max_connections_per_ip) else {
            tasks.spawn(async move {
                let _ = stream
                    .write_all(b"421 4.7.0 Too many connections from your address, please try again later\r\n")
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        ctx.metrics.smtp_sessions.inc();
        let span = tracing::info_span!("smtp", peer = %peer);
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        tasks.spawn(
            async move {
                tracing::debug!("connected");
                session::run(stream, peer, ctx, shutdown).await;
                tracing::debug!("disconnected");
                drop(permit);
                drop(ip_slot);
            }
            .instrument(span),
        );
    }
}

/// One connection counted against its IP address; released when dropped.
struct IpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut counts = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self { map: Arc::clone(map), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
