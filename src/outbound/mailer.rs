//! Where outgoing mail goes: a folder of `.eml` files (the embedded
//! default) or an SMTP relay through lettre's async transport with a
//! connection pool. The only importer of lettre's transports.

use lettre::address::Envelope;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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

/// A mail the folder mailer has written to a temporary file and not yet
/// made durable.
pub struct StagedMail {
    /// The outbox item it is: the final name is `<id>.eml`.
    id: i64,
    /// Where it is until then.
    temporary: PathBuf,
    /// The open file, to be synced.
    file: std::fs::File,
}

/// The sink of outgoing mail.
#[derive(Clone)]
pub enum Mailer {
    /// Files `<id>.eml` in a folder, written atomically: [`Mailer::send`]
    /// writes a temporary file and [`Mailer::sync`] makes a pass's files
    /// durable together and gives them their names.
    Folder {
        /// The outgoing-mail folder.
        dir: PathBuf,
        /// Mails written since the last sync.
        staged: Arc<Mutex<Vec<StagedMail>>>,
    },
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
            Mailer::Folder { dir, .. } => write!(f, "Folder({})", dir.display()),
            Mailer::Relay { shown, .. } => write!(f, "Relay({shown})"),
        }
    }
}

impl Mailer {
    /// A relay from a URL (`smtp://host:25`, `smtp://user:pass@host:587?tls=starttls`,
    /// `smtps://host:465`), or the folder when there is no URL.
    pub fn new(relay_url: Option<&str>, folder: PathBuf, hello_name: &str, pool_size: u32) -> anyhow::Result<Self> {
        let Some(url) = relay_url else {
            return Ok(Mailer::Folder { dir: folder, staged: Arc::default() });
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
            Mailer::Folder { dir, .. } => format!("folder {}", dir.display()),
            Mailer::Relay { shown, .. } => format!("relay {shown}"),
        }
    }

    /// Hands one message over; `id` names the file in folder mode. A
    /// folder's mail is written but not yet durable nor under its name: that
    /// is done by [`Mailer::sync`].
    pub async fn send(&self, id: i64, envelope: &Envelope, bytes: &[u8]) -> Result<(), DeliveryError> {
        match self {
            Mailer::Folder { dir, staged } => {
                let (dir, bytes) = (dir.clone(), bytes.to_vec());
                let written = tokio::task::spawn_blocking(move || write_temporary(&dir, id, &bytes))
                    .await
                    .map_err(|e| DeliveryError::transient(e.to_string()))?
                    .map_err(|e| DeliveryError::transient(format!("writing to the outgoing-mail folder: {e}")))?;
                staged.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(written);
                Ok(())
            }
            Mailer::Relay { transport, .. } => match transport.send_raw(envelope, bytes).await {
                Ok(_) => Ok(()),
                Err(error) => Err(DeliveryError { permanent: error.is_permanent(), message: error.to_string() }),
            },
        }
    }

    /// Makes what [`Mailer::send`] handed over durable. In folder mode it
    /// syncs the pass's files, renames each into place and syncs the
    /// folder, in one blocking task: the files' syncs come together (see
    /// [`write_temporary`]) and the folder is synced once per pass rather
    /// than once per file. A relay has taken responsibility when it answered.
    pub async fn sync(&self) -> Result<(), DeliveryError> {
        match self {
            Mailer::Folder { dir, staged } => {
                let mails = std::mem::take(&mut *staged.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
                if mails.is_empty() {
                    return Ok(());
                }
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || settle(&dir, mails))
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

/// Writes a mail to `.<id>.eml.tmp` and asks the kernel to start writing
/// it out, without waiting: by the time [`settle`] syncs a pass's files,
/// most of their pages are on their way, and the syncs mostly find their
/// work done (measured on this machine's ext4: about half the CPU time per
/// file of writing and syncing each in turn).
fn write_temporary(dir: &std::path::Path, id: i64, bytes: &[u8]) -> std::io::Result<StagedMail> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{id}.eml.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    start_writeback(&file);
    Ok(StagedMail { id, temporary, file })
}

/// Makes written mails durable, renames each to `<id>.eml`, and syncs the
/// folder so that the names are durable too.
fn settle(dir: &std::path::Path, mails: Vec<StagedMail>) -> std::io::Result<()> {
    for mail in &mails {
        mail.file.sync_all()?;
    }
    for mail in &mails {
        std::fs::rename(&mail.temporary, dir.join(format!("{}.eml", mail.id)))?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Asks the kernel to start writing `file`'s pages out now (a hint: the
/// `fsync` after it is what makes them durable).
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` is borrowed; the
    // call only starts writeback and reports errors through its result,
    // which a hint may ignore.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Elsewhere there is no such hint; the `fsync`s do all the work.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File) {}

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
