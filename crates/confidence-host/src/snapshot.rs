//! The last-known-good snapshot: the state body exactly as the CDN served it (still encrypted
//! when it came encrypted) plus its ETag, written after every applied download so a restart
//! during a CDN outage still serves flags. The same bytes are accepted as `initialState`, so a
//! team can bake a snapshot into an image.
//!
//! File layout (all integers big-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `CFSNAP02` |
//! | 32 | SHA-256 of the client secret (the digest that names the state on the CDN) |
//! | 1 | `1` when the body is encrypted, else `0` |
//! | 2 + n | ETag length and ETag (UTF-8; length 0 = none) |
//! | 8 + m | body length and body (a `ClientResolverState`, encrypted or not) |
//! | 32 | HMAC-SHA-256 (RFC 2104) of everything above, keyed by SHA-256(`"confidence-snapshot-v2\0"` ‖ client secret) |
//!
//! The secret digest makes a snapshot of another client "foreign"; it is no secret (it is in
//! the CDN URL), so anyone could write it. The HMAC is what makes a file trusted: only a holder
//! of the client secret can produce one, so a file relabelled for another client, edited, cut or
//! rotted is refused. `CFSNAP01` files (a plain SHA-256 where the HMAC is now) are never
//! trusted: anyone could have written them.
//!
//! The file holds the client credential whenever the state is unencrypted, so it is created
//! with mode 0600, and only regular files are read, on a blocking thread (a FIFO or a hung
//! network mount must not hold a runtime worker).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"CFSNAP02";
/// The previous format: checksummed, not authenticated.
const OLD_MAGIC: &[u8; 8] = b"CFSNAP01";
/// Separates the snapshot MAC key from any other use of a SHA-256 of the secret (the CDN digest).
const KEY_LABEL: &[u8] = b"confidence-snapshot-v2\0";
const DIGEST_LEN: usize = 32;
/// Bytes of a snapshot besides the ETag and the body.
const OVERHEAD: usize = MAGIC.len() + DIGEST_LEN + 1 + 2 + 8 + DIGEST_LEN;

/// A state body and what is needed to revalidate it.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The CDN body, byte for byte.
    pub body: Vec<u8>,
    /// The CDN's ETag for `body`, sent as `If-None-Match` after serving from the snapshot.
    pub etag: Option<String>,
    /// Whether `body` is the encrypted (`.enc`) form.
    pub encrypted: bool,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("body_bytes", &self.body.len())
            .field("etag", &self.etag)
            .field("encrypted", &self.encrypted)
            .finish()
    }
}

/// What binds a snapshot to one client: the public digest that names it and the MAC key, both
/// derived from the client secret. `Debug` shows neither.
#[derive(Clone)]
pub struct SnapshotKey {
    digest: [u8; DIGEST_LEN],
    mac_key: [u8; DIGEST_LEN],
}

impl SnapshotKey {
    pub fn new(client_secret: &str) -> Self {
        let mac_key = Sha256::new().chain_update(KEY_LABEL).chain_update(client_secret.as_bytes()).finalize().into();
        SnapshotKey { digest: Sha256::digest(client_secret.as_bytes()).into(), mac_key }
    }

    /// The SHA-256 of the client secret, as recorded in the file.
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    fn mac(&self, content: &[u8]) -> [u8; DIGEST_LEN] {
        hmac_sha256(&self.mac_key, content)
    }
}

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey(<redacted>)")
    }
}

/// HMAC-SHA-256 per RFC 2104 (block size 64 bytes).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; DIGEST_LEN] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..DIGEST_LEN].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new().chain_update(block.map(|b| b ^ 0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(block.map(|b| b ^ 0x5c)).chain_update(inner).finalize().into()
}

/// Compares without an early exit, so timing does not tell how much of a MAC matched.
fn same_mac(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a snapshot file is not used. Never fatal for a provider: it keeps waiting for the CDN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a snapshot file (no CFSNAP02 header)")]
    NotASnapshot,
    #[error("old snapshot format (CFSNAP01, not authenticated): not trusted; the next download replaces it")]
    OldFormat,
    #[error("the snapshot is truncated")]
    Truncated,
    #[error("the snapshot is corrupt (inconsistent lengths or fields)")]
    Corrupt,
    /// The HMAC does not verify: edited, cut, rotted, or written without the secret.
    #[error("the snapshot is not authentic (its HMAC does not verify with this client secret: corrupt or forged)")]
    NotAuthentic,
    #[error("the snapshot belongs to another client secret")]
    Foreign,
    #[error("the snapshot holds an {} state but the provider is configured for an {} one", enc(*.found), enc(*.expected))]
    EncryptionMismatch { found: bool, expected: bool },
    #[error("the snapshot is larger than the {limit}-byte state limit")]
    TooLarge { limit: usize },
    #[error("the snapshot path is not a regular file ({kind})")]
    NotARegularFile { kind: &'static str },
    #[error("reading the snapshot did not finish within the initialize timeout ({limit:?})")]
    ReadTimedOut { limit: Duration },
    #[error("cannot read the snapshot: {0}")]
    Io(String),
}

fn enc(encrypted: bool) -> &'static str {
    if encrypted {
        "encrypted"
    } else {
        "unencrypted"
    }
}

/// Whether `bytes` start like a snapshot, of this format or the old one (as opposed to a bare
/// CDN body).
pub fn is_snapshot(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC) || bytes.starts_with(OLD_MAGIC)
}

/// The file content for `snapshot` of the client `key` was made for.
pub fn encode(key: &SnapshotKey, snapshot: &Snapshot) -> Vec<u8> {
    // ETags are short; one longer than a u16 is cut rather than refused (it only costs a 200).
    let etag = snapshot.etag.as_deref().unwrap_or("").as_bytes();
    let etag = if etag.len() > usize::from(u16::MAX) { &[][..] } else { etag };
    let mut out = Vec::with_capacity(OVERHEAD + etag.len() + snapshot.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(key.digest());
    out.push(u8::from(snapshot.encrypted));
    out.extend_from_slice(&(etag.len() as u16).to_be_bytes());
    out.extend_from_slice(etag);
    out.extend_from_slice(&(snapshot.body.len() as u64).to_be_bytes());
    out.extend_from_slice(&snapshot.body);
    let mac = key.mac(&out);
    out.extend_from_slice(&mac);
    out
}

/// Parses and authenticates a snapshot of the client `key` was made for, expected to be
/// encrypted or not. Accepts nothing partially: any defect is an error.
pub fn decode(bytes: &[u8], key: &SnapshotKey, expect_encrypted: bool) -> Result<Snapshot, SnapshotError> {
    if bytes.starts_with(OLD_MAGIC) {
        return Err(SnapshotError::OldFormat);
    }
    if !bytes.starts_with(MAGIC) {
        return Err(SnapshotError::NotASnapshot);
    }
    if bytes.len() < OVERHEAD {
        return Err(SnapshotError::Truncated);
    }
    let (content, mac) = bytes.split_at(bytes.len() - DIGEST_LEN);
    let mut r = Reader(&content[MAGIC.len()..]);
    let owner = r.take(DIGEST_LEN)?;
    let flag = r.take(1)?[0];
    let etag_len = u16::from_be_bytes(r.array()?);
    let etag = r.take(usize::from(etag_len))?;
    let body_len = u64::from_be_bytes(r.array()?);
    // A length that disagrees with the file size is truncation (or garbage): checked before
    // the MAC so the message says which.
    if body_len != r.0.len() as u64 {
        return Err(if body_len > r.0.len() as u64 { SnapshotError::Truncated } else { SnapshotError::Corrupt });
    }
    // Before the MAC: another client's file cannot verify with this key, and "foreign" says why.
    if owner != key.digest() {
        return Err(SnapshotError::Foreign);
    }
    if !same_mac(&key.mac(content), mac) {
        return Err(SnapshotError::NotAuthentic);
    }
    let encrypted = match flag {
        0 => false,
        1 => true,
        _ => return Err(SnapshotError::Corrupt),
    };
    if encrypted != expect_encrypted {
        return Err(SnapshotError::EncryptionMismatch { found: encrypted, expected: expect_encrypted });
    }
    let etag = std::str::from_utf8(etag).map_err(|_| SnapshotError::Corrupt)?;
    Ok(Snapshot { body: r.0.to_vec(), etag: (!etag.is_empty()).then(|| etag.to_string()), encrypted })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// What a file type is, for the message refusing it.
fn kind(file_type: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

fn io_error(e: io::Error) -> SnapshotError {
    SnapshotError::Io(e.to_string())
}

/// Reads a snapshot file, refusing anything but a regular file (a symbolic link to one is
/// fine) and files larger than a state of `max_state_bytes` could make. `Ok(None)` when there
/// is no file yet. Blocking: run it through [`PendingRead`] from async code.
pub fn read(path: &Path, max_state_bytes: usize) -> Result<Option<Vec<u8>>, SnapshotError> {
    let limit = max_state_bytes.saturating_add(OVERHEAD + usize::from(u16::MAX));
    let not_found = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    // Opening a FIFO for reading waits for a writer, and reading a device may never end.
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    if !metadata.is_file() {
        return Err(SnapshotError::NotARegularFile { kind: kind(metadata.file_type()) });
    }
    let mut options = OpenOptions::new();
    options.read(true);
    // The path may be swapped between the check and the open: non-blocking, a FIFO there cannot
    // hold the open either, and the check is repeated on what was opened.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(SnapshotError::NotARegularFile { kind: kind(metadata.file_type()) });
    }
    if metadata.len() > limit as u64 {
        return Err(SnapshotError::TooLarge { limit: max_state_bytes });
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(io_error)?;
    if bytes.len() > limit {
        return Err(SnapshotError::TooLarge { limit: max_state_bytes });
    }
    Ok(Some(bytes))
}

/// A [`read`] running on a blocking thread. A read that never ends (a hung network mount)
/// costs that thread, never a runtime worker, and its caller waits only until its deadline.
pub struct PendingRead(tokio::task::JoinHandle<Result<Option<Vec<u8>>, SnapshotError>>);

impl PendingRead {
    /// Starts reading `path`.
    ///
    /// # Panics
    /// When called outside a tokio runtime (like `tokio::task::spawn_blocking`).
    pub fn start(path: PathBuf, max_state_bytes: usize) -> Self {
        Self::spawn(move || read(&path, max_state_bytes))
    }

    fn spawn(read: impl FnOnce() -> Result<Option<Vec<u8>>, SnapshotError> + Send + 'static) -> Self {
        PendingRead(tokio::task::spawn_blocking(read))
    }

    /// The read's outcome, or [`SnapshotError::ReadTimedOut`] (reporting `limit`) if it has not
    /// finished by `deadline`; the read itself then finishes, or not, unobserved.
    pub async fn until(
        self,
        deadline: tokio::time::Instant,
        limit: Duration,
    ) -> Result<Option<Vec<u8>>, SnapshotError> {
        match tokio::time::timeout_at(deadline, self.0).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => Err(SnapshotError::Io(format!("the read failed: {e}"))),
            Err(_) => Err(SnapshotError::ReadTimedOut { limit }),
        }
    }
}

/// Replaces `path` with `bytes` so that a reader (or a crash at any point) sees either the old
/// file or the new one, never a mix: write a temporary file beside it (mode 0600 on unix: an
/// unencrypted state holds the client credential), fsync, rename, fsync the directory (best
/// effort: not every platform can open one). Blocking: call it off the runtime's workers.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot { body: b"state bytes".to_vec(), etag: Some("\"v7\"".into()), encrypted: true }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let hex = |mac: [u8; 32]| hex::encode(mac);
        assert_eq!(
            hex(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn round_trips() {
        let key = SnapshotKey::new("s");
        let bytes = encode(&key, &sample());
        assert!(is_snapshot(&bytes));
        assert_eq!(decode(&bytes, &key, true), Ok(sample()));
        let no_etag = Snapshot { etag: None, encrypted: false, ..sample() };
        assert_eq!(decode(&encode(&key, &no_etag), &key, false), Ok(no_etag));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let key = SnapshotKey::new("s");
        let bytes = encode(&key, &sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], &key, true).is_err(), "accepted a {len}-byte prefix");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad, &key, true).is_err(), "accepted a flip at byte {i}");
        }
    }

    #[test]
    fn only_a_holder_of_the_secret_makes_a_trusted_file() {
        let (a, b) = (SnapshotKey::new("a"), SnapshotKey::new("b"));
        let mut forged = encode(&a, &sample());
        forged[MAGIC.len()..MAGIC.len() + DIGEST_LEN].copy_from_slice(b.digest());
        let content = forged.len() - DIGEST_LEN;
        let checksum = Sha256::digest(&forged[..content]);
        forged[content..].copy_from_slice(&checksum);
        assert_eq!(decode(&forged, &b, true), Err(SnapshotError::NotAuthentic));
        assert_eq!(decode(&forged, &a, true), Err(SnapshotError::Foreign));
        // The key is not the public digest: a MAC keyed by it does not verify either.
        let digest = *b.digest();
        let keyed_by_digest = hmac_sha256(&digest, &forged[..content]);
        forged[content..].copy_from_slice(&keyed_by_digest);
        assert_eq!(decode(&forged, &b, true), Err(SnapshotError::NotAuthentic));
    }

    #[test]
    fn foreign_old_and_mismatched_snapshots_say_why() {
        let bytes = encode(&SnapshotKey::new("a"), &sample());
        assert_eq!(decode(&bytes, &SnapshotKey::new("b"), true), Err(SnapshotError::Foreign));
        let err = decode(&bytes, &SnapshotKey::new("a"), false).unwrap_err();
        assert_eq!(err, SnapshotError::EncryptionMismatch { found: true, expected: false });
        assert_eq!(
            err.to_string(),
            "the snapshot holds an encrypted state but the provider is configured for an unencrypted one"
        );
        assert_eq!(decode(b"\x0a\x03abc", &SnapshotKey::new("a"), true), Err(SnapshotError::NotASnapshot));
        let mut old = bytes.clone();
        old[..MAGIC.len()].copy_from_slice(OLD_MAGIC);
        assert!(is_snapshot(&old));
        assert_eq!(decode(&old, &SnapshotKey::new("a"), true), Err(SnapshotError::OldFormat));
        assert!(format!("{:?}", SnapshotKey::new("a-secret")).contains("redacted"));
    }

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cf-snapshot-unit-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_replace_the_file_whole_and_leave_no_temporaries() {
        let dir = scratch("write");
        let path = dir.join("state.snap");
        assert_eq!(read(&path, 1024), Ok(None));
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(read(&path, 1024), Ok(Some(b"second".to_vec())));
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.snap")]);
        write_atomic(&path, &vec![0; OVERHEAD + usize::from(u16::MAX) + 2]).unwrap();
        assert_eq!(read(&path, 1), Err(SnapshotError::TooLarge { limit: 1 }));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = scratch("kinds");
        assert_eq!(read(&dir, 1024), Err(SnapshotError::NotARegularFile { kind: "a directory" }));
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo");
            assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
            assert_eq!(read(&fifo, 1024), Err(SnapshotError::NotARegularFile { kind: "a FIFO" }));
            let link = dir.join("link");
            std::os::unix::fs::symlink(&fifo, &link).unwrap();
            assert_eq!(read(&link, 1024), Err(SnapshotError::NotARegularFile { kind: "a FIFO" }));
            assert_eq!(
                read(Path::new("/dev/zero"), 1024),
                Err(SnapshotError::NotARegularFile { kind: "a character device" })
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_read_that_does_not_finish_gives_up_at_the_deadline_and_holds_no_worker() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        // Stands for a read on a hung mount: it ends only when the test says so.
        let hung = PendingRead::spawn(move || {
            let _ = released.recv();
            Ok(Some(b"late".to_vec()))
        });
        let limit = Duration::from_millis(50);
        let outcome = hung.until(tokio::time::Instant::now() + limit, limit).await;
        assert_eq!(outcome, Err(SnapshotError::ReadTimedOut { limit }));
        // The runtime's only worker is free meanwhile.
        assert_eq!(tokio::spawn(async { 7 }).await.unwrap(), 7);
        release.send(()).unwrap();
    }
}
