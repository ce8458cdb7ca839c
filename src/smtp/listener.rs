//! The accept loop: one task and one tracing span per connection, caps on
//! concurrent connections (in all, per IP address, per network), and a
//! clean stop on shutdown. Never reads message content or the store.
//!
//! Slots for real mail: when every slot is taken, a new connection does not
//! simply get `421`. The session that has made no progress for the longest
//! (no command answered, no DATA arriving at the minimum rate) for at least
//! [`EVICTION_GRACE`] is closed with `421 4.3.2` to make room; sessions
//! whose client delivered a message go last. When none qualifies yet, the
//! new connection waits that long for one (a few dozen at most). Slow or
//! idle clients can fill the slots, but not keep them from anyone who is
//! sending mail: a real client answers the greeting at once.

use super::session::{self, Live, Peer, SessionContext};
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

/// A session must have made no progress for this long before it can be
/// closed to make room for a new connection.
pub const EVICTION_GRACE: Duration = Duration::from_secs(2);

/// The sessions running, for choosing one to close when the slots are full.
type Sessions = Arc<Mutex<HashMap<u64, (IpAddr, Arc<Live>)>>>;

/// Accepts connections on `listener` until `shutdown` fires; sessions are
/// spawned on `tasks` so that the caller can wait for them to finish.
pub async fn serve(listener: TcpListener, ctx: Arc<SessionContext>, shutdown: CancellationToken, tasks: TaskTracker) {
    let permits = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let per_ip: Counts = Arc::default();
    let per_network: Counts = Arc::default();
    let sessions: Sessions = Arc::default();
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        let admission = Admission {
            permits: Arc::clone(&permits),
            sessions: Arc::clone(&sessions),
            waiting: Arc::clone(&waiting),
            per_ip: Arc::clone(&per_ip),
            per_network: Arc::clone(&per_network),
        };
        let span = tracing::info_span!("smtp", peer = %peer);
        tasks.spawn(
            async move {
                let mut stream = stream;
                let peer = match ctx.proxy_protocol_from.contains(peer.ip()) {
                    false => Peer::tcp(peer),
                    true => match super::proxy::read_header(&mut stream).await {
                        Ok(client) => {
                            let addr = client.unwrap_or(peer);
                            Peer { addr, name: addr.to_string(), proxied: client.is_some(), unix: false }
                        }
                        Err(why) => {
                            tracing::info!(why, "closing a connection from a trusted proxy");
                            ctx.metrics.smtp_refused("proxy_header");
                            return;
                        }
                    },
                };
                admission.run(stream, peer, id, ctx, shutdown).await;
            }
            .instrument(span),
        );
    }
    turn_away_while_draining(|| async { listener.accept().await.map(|(s, _)| s) }, &ctx).await;
}

/// What a connection made while the server shuts down is told.
const SHUTTING_DOWN: &[u8] = b"421 4.3.2 mailgate is shutting down; please try again later\r\n";

/// After a stop is asked for: the listener keeps its port (or socket) and
/// answers each new connection `421` (the client tries again later, or its
/// next MX) until every session under way on any mail listener has
/// finished, or `[limits] shutdown_grace_secs` is over.
async fn turn_away_while_draining<S, F, Fut>(mut accept: F, ctx: &SessionContext)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
    S: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::sync::atomic::Ordering;
    let deadline = tokio::time::Instant::now() + ctx.limits.shutdown_grace;
    while ctx.open_sessions.load(Ordering::Acquire) > 0 {
        tokio::select! {
            accepted = accept() => {
                let Ok(mut stream) = accepted else { continue };
                ctx.metrics.smtp_refused("shutting_down");
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(SHUTTING_DOWN)).await;
                    let _ = stream.shutdown().await;
                });
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = tokio::time::sleep_until(deadline) => {
                let open = ctx.open_sessions.load(Ordering::Acquire);
                tracing::warn!(open, "stopping with sessions still open: their messages were not acknowledged");
                return;
            }
        }
    }
}

/// Binds a unix socket at `path` with mode 0660 (the mail server's group
/// may connect): a stale socket left by a process that died is replaced;
/// any other file there, or a live socket, stops the start.
pub fn bind_unix_socket(path: &std::path::Path, what: &str) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!("{what}: {} exists and is not a socket; remove it or choose another path", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{what}: another process listens on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("{what}: removing the stale socket {}", path.display()))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{what}: creating {}", parent.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("{what}: binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("{what}: setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Takes connections on the unix socket at `path` (LMTP from a mail server
/// on this host) until `shutdown`; every client is this host, so only the
/// global cap applies.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(ctx.limits.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            ctx.metrics.smtp_refused("max_connections");
            tasks.spawn(async move {
                let mut stream = stream;
                let _ = stream.write_all(b"421 4.3.2 Too many connections, please try again later\r\n").await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let (ctx, shutdown, peer) = (Arc::clone(&ctx), shutdown.clone(), Peer::unix(&path));
        tasks.spawn(
            async move {
                ctx.metrics.smtp_sessions.inc();
                session::run(stream, peer, ctx, shutdown, None).await;
                drop(permit);
            }
            .instrument(tracing::info_span!("lmtp", peer = "unix")),
        );
    }
    turn_away_while_draining(|| async { listener.accept().await.map(|(s, _)| s) }, &ctx).await;
    // A clean stop leaves no socket file behind.
    let _ = std::fs::remove_file(&path);
}

/// Connections waiting for a slot at most; beyond them, `421` at once.
const MAX_WAITING: usize = 64;

/// What admitting a connection needs: the slots, the sessions (to close
/// one), how many wait, and the connections per address and network.
struct Admission {
    permits: Arc<Semaphore>,
    sessions: Sessions,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    per_ip: Counts,
    per_network: Counts,
}

impl Admission {
    /// Runs a session for `peer` once it is admitted, or turns it away with
    /// `421` (too many connections from its address, its network, or in all).
    async fn run(
        self,
        mut stream: tokio::net::TcpStream,
        peer: Peer,
        id: u64,
        ctx: Arc<SessionContext>,
        shutdown: CancellationToken,
    ) {
        let ip = peer.addr.ip();
        // A trusted relay carries many clients' mail: no per-address cap.
        let (per_ip, per_network) = match ctx.trusted_relays.contains(ip) {
            true => (usize::MAX, usize::MAX),
            false => (ctx.limits.max_connections_per_ip, ctx.limits.max_connections_per_network),
        };
        let refuse = |reason: &'static str, text: &'static [u8]| {
            ctx.metrics.smtp_refused(reason);
            text
        };
        let slots = Slot::take(&self.per_ip, ip, per_ip)
            .ok_or_else(|| {
                refuse("per_ip", b"421 4.7.0 Too many connections from your address, please try again later\r\n")
            })
            .and_then(|ip_slot| {
                let network = Slot::take(&self.per_network, network_of(ip), per_network);
                let text = b"421 4.7.0 Too many connections from your network, please try again later\r\n";
                network.map(|n| (ip_slot, n)).ok_or_else(|| refuse("per_network", text))
            });
        let slots = match slots {
            Ok(slots) => slots,
            Err(text) => {
                let _ = stream.write_all(text).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        let Some(permit) = self.admit().await else {
            ctx.metrics.smtp_refused("max_connections");
            let _ = stream.write_all(b"421 4.3.2 Too many connections, please try again later\r\n").await;
            let _ = stream.shutdown().await;
            return;
        };
        let live = Arc::new(Live::default());
        ctx.metrics.smtp_sessions.inc();
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, (ip, Arc::clone(&live)));
        tracing::debug!("connected");
        session::run(stream, peer, ctx, shutdown, Some(live)).await;
        tracing::debug!("disconnected");
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        drop(permit);
        drop(slots);
    }

    /// A slot for a new connection: a free one, or one a session gives up
    /// when it is closed to make room. When no session can be closed yet
    /// (none has been without progress for [`EVICTION_GRACE`]), the
    /// connection waits that long (at most [`MAX_WAITING`] of them) before
    /// it is refused.
    async fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering;
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let deadline = tokio::time::Instant::now() + EVICTION_GRACE + Duration::from_secs(1);
        let mut permit = None;
        while permit.is_none() && tokio::time::Instant::now() < deadline {
            permit = match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) if evict_one(&self.sessions) => {
                    let wait = Arc::clone(&self.permits).acquire_owned();
                    tokio::time::timeout(Duration::from_secs(2), wait).await.ok().and_then(Result::ok)
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    None
                }
            };
        }
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit
    }
}

/// Closes the session that has made no progress for the longest (at least
/// [`EVICTION_GRACE`]), those whose client delivered mail last; whether
/// there was one.
fn evict_one(sessions: &Sessions) -> bool {
    let sessions = sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let grace = EVICTION_GRACE.as_millis() as u64;
    let victim = sessions
        .values()
        .filter(|(_, live)| !live.evict.is_cancelled() && live.idle_ms() >= grace)
        .max_by_key(|(_, live)| (!live.delivered(), live.idle_ms()));
    match victim {
        Some((ip, live)) => {
            tracing::info!(peer = %ip, idle_ms = live.idle_ms(), "every slot is taken: closing the idlest session");
            live.evict.cancel();
            true
        }
        None => false,
    }
}

/// The network an address belongs to, for the per-network cap: its /24
/// for IPv4 (and IPv4-mapped IPv6), its /48 for IPv6.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
            }
        },
    }
}

/// Connections counted per key (an address or a network).
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection counted against a key; released when dropped.
struct Slot {
    map: Counts,
    key: IpAddr,
}

impl Slot {
    fn take(map: &Counts, key: IpAddr, limit: usize) -> Option<Self> {
        let mut counts = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(key).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self { map: Arc::clone(map), key })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::network_of;
    use std::net::IpAddr;

    #[test]
    fn networks_are_a_slash_24_or_a_slash_48() {
        let net = |s: &str| network_of(s.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(net("192.0.2.77"), "192.0.2.0");
        assert_eq!(net("2001:db8:1:2:3::9"), "2001:db8:1::");
        assert_eq!(net("::ffff:198.51.100.9"), "198.51.100.0");
    }
}
