//! The accept loop: one task and one tracing span per connection, a cap on
//! concurrent connections (`421 4.3.2` beyond it), and a clean stop on
//! shutdown. Never reads message content or the store.

use super::session::{self, SessionContext};
use std::sync::Arc;
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
        let span = tracing::info_span!("smtp", peer = %peer);
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        tasks.spawn(
            async move {
                tracing::debug!("connected");
                session::run(stream, peer, ctx, shutdown).await;
                tracing::debug!("disconnected");
                drop(permit);
            }
            .instrument(span),
        );
    }
}
