//! Telling a service manager how the server is doing: systemd's
//! `sd_notify` protocol (`Type=notify` units). When `NOTIFY_SOCKET` is set,
//! the server sends `READY=1` once every listener is up and the tokens are
//! made, and `STOPPING=1` when it begins to shut down. Without it, nothing
//! is sent. A datagram, written by hand: the protocol is one line of text
//! to a Unix socket, and no crate is needed for that.

/// Sends `state` (e.g. `READY=1`) to the service manager, if one listens.
/// Failing to tell it is logged, never fatal: the server runs either way.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(error) = send(&socket, state) {
        tracing::warn!(%error, socket = %socket.to_string_lossy(), "telling systemd {state} failed");
    }
}

#[cfg(target_os = "linux")]
fn send(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    // A leading `@` names a socket in the abstract namespace.
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send(_socket: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}
