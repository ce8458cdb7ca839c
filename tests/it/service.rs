//! Issue 35, the service: the systemd unit we ship passes `systemd-analyze
//! verify`, and `serve` tells systemd when it is ready and when it stops
//! (`Type=notify`).

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd/mailgate.service")).unwrap();
    for setting in [
        "Type=notify",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/mailgate",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "Restart=on-failure",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    // Verified with the binary this build made standing in for /usr/bin/mailgate.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailgate.service");
    std::fs::write(&path, unit.replace("/usr/bin/mailgate", env!("CARGO_BIN_EXE_mailgate"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (Debian's systemd; scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("MAILGATE_DOMAIN", "notify.example.test")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = start_line(&mut child);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1 arrives");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(started.contains("notify.example.test"), "{started}");
    signal(&child, "TERM");
    let n = socket.recv(&mut buf).expect("STOPPING=1 arrives");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}
