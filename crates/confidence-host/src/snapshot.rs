//! The last-known-good snapshot: the state body exactly as the CDN served it (still encrypted
//! when it came encrypted) plus its ETag, written after every applied download so a restart
//! during a CDN outage still serves flags. The same bytes are accepted as `initialState`, so a
//! team can bake a snapshot into an image.
//!
//! File layout (all integers big-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `CFSNAP01` |
//! | 32 | SHA-256 of the client secret (the digest that names the state on the CDN) |
//! | 1 | `1` when the body is encrypted, else `0` |
//! | 2 + n | ETag length and ETag (UTF-8; length 0 = none) |
//! | 8 + m | body length and body (a `ClientResolverState`, encrypted or not) |
//! | 32 | SHA-256 of everything above |
//!
//! The secret digest makes a snapshot of another client "foreign"; the trailing digest catches
//! truncation and bit rot. Neither is a secret: the digest is already public in the CDN URL.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"CFSNAP01";
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

/// Why a snapshot file is not used. Never fatal for a provider: it keeps waiting for the CDN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a snapshot file (no CFSNAP01 header)")]
    NotASnapshot,
    #[error("the snapshot is truncated")]
    Truncated,
    #[error("the snapshot is corrupt (checksum mismatch)")]
    Corrupt,
    #[error("the snapshot belongs to another client secret")]
    Foreign,
    #[error("the snapshot holds an {} state but the provider is configured for an {} one", enc(*.found), enc(*.expected))]
    EncryptionMismatch { found: bool, expected: bool },
    #[error("the snapshot is larger than the {limit}-byte state limit")]
    TooLarge { limit: usize },
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

/// The SHA-256 of a client secret, as recorded in snapshots.
pub fn secret_digest(secret: &str) -> [u8; DIGEST_LEN] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `bytes` start like a snapshot (as opposed to a bare CDN body).
pub fn is_snapshot(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The file content for `snapshot` of the client whose secret digest is `digest`.
pub fn encode(digest: &[u8; DIGEST_LEN], snapshot: &Snapshot) -> Vec<u8> {
    // ETags are short; one longer than a u16 is cut rather than refused (it only costs a 200).
    let etag = snapshot.etag.as_deref().unwrap_or("").as_bytes();
    let etag = if etag.len() > usize::from(u16::MAX) { &[][..] } else { etag };
    let mut out = Vec::with_capacity(OVERHEAD + etag.len() + snapshot.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(digest);
    out.push(u8::from(snapshot.encrypted));
    out.extend_from_slice(&(etag.len() as u16).to_be_bytes());
    out.extend_from_slice(etag);
    out.extend_from_slice(&(snapshot.body.len() as u64).to_be_bytes());
    out.extend_from_slice(&snapshot.body);
    let check = Sha256::digest(&out);
    out.extend_from_slice(&check);
    out
}

/// Parses and checks a snapshot of the client `digest` that is expected to be encrypted or
/// not. Accepts nothing partially: any defect is an error.
pub fn decode(bytes: &[u8], digest: &[u8; DIGEST_LEN], expect_encrypted: bool) -> Result<Snapshot, SnapshotError> {
    if !is_snapshot(bytes) {
        return Err(SnapshotError::NotASnapshot);
    }
    if bytes.len() < OVERHEAD {
        return Err(SnapshotError::Truncated);
    }
    let (content, check) = bytes.split_at(bytes.len() - DIGEST_LEN);
    let mut r = Reader(&content[MAGIC.len()..]);
    let owner = r.take(DIGEST_LEN)?;
    let encrypted = match r.take(1)?[0] {
        0 => false,
        1 => true,
        _ => return Err(SnapshotError::Corrupt),
    };
    let etag_len = u16::from_be_bytes(r.array()?);
    let etag = r.take(usize::from(etag_len))?;
    let body_len = u64::from_be_bytes(r.array()?);
    // A length that disagrees with the file size is truncation (or garbage): checked before
    // the checksum so the message says which.
    if body_len != r.0.len() as u64 {
        return Err(if body_len > r.0.len() as u64 { SnapshotError::Truncated } else { SnapshotError::Corrupt });
    }
    if Sha256::digest(content).as_slice() != check {
        return Err(SnapshotError::Corrupt);
    }
    if owner != digest {
        return Err(SnapshotError::Foreign);
    }
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

/// Reads a snapshot file, refusing files larger than a state of `max_state_bytes` could make.
/// `Ok(None)` when there is no file yet.
pub fn read(path: &Path, max_state_bytes: usize) -> Result<Option<Vec<u8>>, SnapshotError> {
    let limit = max_state_bytes.saturating_add(OVERHEAD + usize::from(u16::MAX));
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::Io(e.to_string())),
    };
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|e| SnapshotError::Io(e.to_string()))?;
    if bytes.len() > limit {
        return Err(SnapshotError::TooLarge { limit: max_state_bytes });
    }
    Ok(Some(bytes))
}

/// Replaces `path` with `bytes` so that a reader (or a crash at any point) sees either the old
/// file or the new one, never a mix: write a temporary file beside it, fsync, rename, fsync the
/// directory (best effort: not every platform can open one).
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
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
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
    fn round_trips() {
        let digest = secret_digest("s");
        let bytes = encode(&digest, &sample());
        assert!(is_snapshot(&bytes));
        assert_eq!(decode(&bytes, &digest, true), Ok(sample()));
        let no_etag = Snapshot { etag: None, encrypted: false, ..sample() };
        assert_eq!(decode(&encode(&digest, &no_etag), &digest, false), Ok(no_etag));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let digest = secret_digest("s");
        let bytes = encode(&digest, &sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], &digest, true).is_err(), "accepted a {len}-byte prefix");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad, &digest, true).is_err(), "accepted a flip at byte {i}");
        }
    }

    #[test]
    fn foreign_and_mismatched_snapshots_say_why() {
        let bytes = encode(&secret_digest("a"), &sample());
        assert_eq!(decode(&bytes, &secret_digest("b"), true), Err(SnapshotError::Foreign));
        let err = decode(&bytes, &secret_digest("a"), false).unwrap_err();
        assert_eq!(err, SnapshotError::EncryptionMismatch { found: true, expected: false });
        assert_eq!(
            err.to_string(),
            "the snapshot holds an encrypted state but the provider is configured for an unencrypted one"
        );
        assert_eq!(decode(b"\x0a\x03abc", &secret_digest("a"), true), Err(SnapshotError::NotASnapshot));
    }

    #[test]
    fn writes_replace_the_file_whole_and_leave_no_temporaries() {
        let dir = std::env::temp_dir().join(format!("cf-snapshot-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
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
}
