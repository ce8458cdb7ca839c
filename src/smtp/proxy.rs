//! The PROXY protocol (v1 text and v2 binary, as HAProxy and cloud TCP load
//! balancers send it): the header before the first SMTP byte that names the
//! client the proxy took the connection from. Read only from addresses in
//! `[auth] trusted_proxies`; the ppp crate parses it, this module frames it
//! (reading exactly the header's bytes, so that none of the session's is
//! taken).

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 header's first twelve bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header is at most this long, CRLF included.
const V1_MAX: usize = 107;

/// How long a proxy may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the PROXY header at the start of `stream`: the client's address,
/// `Ok(None)` when the proxy speaks for itself (`LOCAL`, `UNKNOWN`: a
/// health check), or why it is not a PROXY header.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, String> {
    match tokio::time::timeout(HEADER_TIMEOUT, read(stream)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no PROXY header within {} s", HEADER_TIMEOUT.as_secs())),
    }
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, String> {
    let io = |e: std::io::Error| format!("reading the PROXY header: {e}");
    let mut head = [0u8; 16];
    stream.read_exact(&mut head[..6]).await.map_err(io)?;
    if head[..6] == *b"PROXY " {
        let mut line = head[..6].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err("a PROXY v1 header longer than 107 bytes".to_owned());
            }
            line.push(stream.read_u8().await.map_err(io)?);
        }
        let header = ppp::v1::Header::try_from(line.as_slice()).map_err(|e| format!("a bad PROXY v1 header: {e}"))?;
        return Ok(match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v1::Addresses::Unknown => None,
        });
    }
    if head[..6] != V2_SIGNATURE[..6] {
        return Err("the connection did not start with a PROXY header".to_owned());
    }
    stream.read_exact(&mut head[6..]).await.map_err(io)?;
    if head[..12] != V2_SIGNATURE {
        return Err("the connection did not start with a PROXY header".to_owned());
    }
    let length = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut header = head.to_vec();
    header.resize(16 + length, 0);
    stream.read_exact(&mut header[16..]).await.map_err(io)?;
    let header = ppp::v2::Header::try_from(header.as_slice()).map_err(|e| format!("a bad PROXY v2 header: {e}"))?;
    if header.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::read_header;

    #[tokio::test]
    async fn both_versions_name_the_client_and_leave_the_session_bytes() {
        let mut v1: &[u8] = b"PROXY TCP4 203.0.113.5 10.0.0.1 40000 25\r\nEHLO x\r\n";
        assert_eq!(read_header(&mut v1).await.unwrap(), Some("203.0.113.5:40000".parse().unwrap()));
        assert_eq!(v1, b"EHLO x\r\n");
        let addresses: ppp::v2::Addresses = (
            "[2001:db8::5]:41000".parse::<std::net::SocketAddr>().unwrap(),
            "[2001:db8::1]:25".parse::<std::net::SocketAddr>().unwrap(),
        )
            .into();
        let mut v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap();
        v2.extend_from_slice(b"EHLO y\r\n");
        let mut reader = v2.as_slice();
        assert_eq!(read_header(&mut reader).await.unwrap(), Some("[2001:db8::5]:41000".parse().unwrap()));
        assert_eq!(reader, b"EHLO y\r\n");
        let mut unknown: &[u8] = b"PROXY UNKNOWN\r\n";
        assert_eq!(read_header(&mut unknown).await.unwrap(), None);
        for bad in [&b"EHLO x\r\n"[..], b"PROXY TCP4 nonsense\r\n", &[b'P'; 200][..]] {
            let mut bad = bad;
            assert!(read_header(&mut bad).await.is_err());
        }
        let mut long: Vec<u8> = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 300));
        assert!(read_header(&mut long.as_slice()).await.unwrap_err().contains("107"));
    }
}
