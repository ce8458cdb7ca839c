//! Where outgoing mail goes: a folder of `.eml` files (the embedded
//! default) or an SMTP relay through lettre's async transport with a
//! connection pool. The only importer of lettre's transports.

use lettre::address::Envelope;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// A 5xx answer: the relay will not take this mail, retrying is pointless.
    pub permanent: bool,
    /// What happened.
    pub message: String,
}

impl DeliveryError {
    fn transient(message: impl Into<String>) -> Self {
        Self { permanent: false, message: message.into() }
    }
}

/// The sink of outgoing mail.
#[derive(Clone)]
pub enum Mailer {
    /// Files `<id>.eml` in a folder, written atomically.
    Folder(PathBuf),
    /// An SMTP relay.
    Relay {
        /// The pooled transport.
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The relay URL without credentials, for logs.
        shown: String,
    },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Folder(dir) => write!(f, "Folder({})", dir.display()),
            Mailer::Relay { shown, .. } => write!(f, "Relay({shown})"),
        }
    }
}

impl Mailer {
    /// A relay from a URL (`smtp://host:25`, `smtp://user:pass@host:587?tls=starttls`,
    /// `smtps://host:465`), or the folder when there is no URL.
    pub fn new(relay_url: Option<&str>, folder: PathBuf, hello_name: &str, pool_size: u32) -> anyhow::Result<Self> {
        let Some(url) = relay_url else {
            return Ok(Mailer::Folder(folder));
        };
        // lettre says `tls=required` for STARTTLS; accept the common name too.
        let lettre_url = url.replace("tls=starttls", "tls=required");
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url)
            .map_err(|e| anyhow::anyhow!("relay URL {:?}: {e}", shown_url(url)))?;
        let transport = builder
            .hello_name(lettre::transport::smtp::extension::ClientId::Domain(hello_name.to_owned()))
            .timeout(Some(Duration::from_secs(60)))
            .pool_config(PoolConfig::new().max_size(pool_size.max(1)))
            .build();
        Ok(Mailer::Relay { transport, shown: shown_url(url) })
    }

    /// What this mailer is, for the start-up log (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Mailer::Folder(dir) => format!("folder {}", dir.display()),
            Mailer::Relay { shown, .. } => format!("relay {shown}"),
        }
    }

    /// Hands one message over; `id` names the file in folder mode.
    pub async fn send(&self, id: i64, envelope: &Envelope, bytes: &[u8]) -> Result<(), DeliveryError> {
        match self {
            Mailer::Folder(dir) => write_file(dir.clone(), id, bytes.to_vec()).await,
            Mailer::Relay { transport, .. } => match transport.send_raw(envelope, bytes).await {
                Ok(_) => Ok(()),
                Err(error) => Err(DeliveryError { permanent: error.is_permanent(), message: error.to_string() }),
            },
        }
    }

    /// Makes what [`Mailer::send`] handed over durable: in folder mode the
    /// files are, but their names are only once the folder itself is synced,
    /// which is done once for a whole pass rather than once per file. A relay
    /// has taken responsibility when it answered.
    pub async fn sync(&self) -> Result<(), DeliveryError> {
        match self {
            Mailer::Folder(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || match std::fs::File::open(&dir) {
                    Ok(folder) => folder.sync_all(),
                    // Nothing was written yet.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(error) => Err(error),
                })
                .await
                .map_err(|e| DeliveryError::transient(e.to_string()))?
                .map_err(|e| DeliveryError::transient(format!("syncing the outgoing-mail folder: {e}")))
            }
            Mailer::Relay { .. } => Ok(()),
        }
    }
}

/// The URL with any password replaced, safe to log.
fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

async fn write_file(dir: PathBuf, id: i64, bytes: Vec<u8>) -> Result<(), DeliveryError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{id}.eml.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("{id}.eml")))
    })
    .await
    .map_err(|e| DeliveryError::transient(e.to_string()))?
    .map_err(|e| DeliveryError::transient(format!("writing to the outgoing-mail folder: {e}")))
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn credentials_never_reach_the_log() {
        assert_eq!(
            shown_url("smtp://user:secret@relay.example:587?tls=starttls"),
            "smtp://***@relay.example:587?tls=starttls"
        );
        assert_eq!(shown_url("smtps://relay.example"), "smtps://relay.example");
    }
}
