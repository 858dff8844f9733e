//! Cluster secrets as programs read them: from a file or the environment,
//! never from a command line (argv is readable by every user of the
//! machine through `ps` and `/proc`).
//!
//! Format: 32 bytes written as 64 hex digits, or as base64 (standard or
//! URL-safe alphabet, padding optional; 43 or 44 characters).
//! Surrounding whitespace (a trailing newline in a file) is ignored;
//! nothing else may surround the key. Make one with
//! `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'` or
//! `openssl rand -hex 32`.
//!
//! Layer: base (beside `config`); imports nothing from the crate.
//!
//! Invariants: an error never contains the secret's text (not even a
//! wrong one); parsing is total (no input panics).

use std::path::{Path, PathBuf};

/// The environment variable programs read a cluster secret from.
pub const SECRET_ENV: &str = "MANTA_SECRET";

/// Why a cluster secret could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text is neither 64 hex digits nor base64 of 32 bytes.
    #[error(
        "a cluster secret must be 32 bytes written as 64 hex digits or as base64 (43 or 44 characters); \
         got {len} characters in {from}"
    )]
    Format {
        /// Where the text came from (a file, or the environment variable).
        from: String,
        /// How many characters it had (after trimming whitespace).
        len: usize,
    },
    /// The secret file could not be read.
    #[error("cannot read the cluster secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is set but not valid Unicode.
    #[error("{SECRET_ENV} is not valid Unicode")]
    NotUnicode,
}

/// Parses a secret (see the module docs for the format); `from` names its
/// source in the error.
pub fn parse_secret(text: &str, from: &str) -> Result<[u8; 32], SecretError> {
    let t = text.trim();
    let bad = || SecretError::Format { from: from.to_string(), len: t.chars().count() };
    if t.len() == 64 {
        if let Some(k) = from_hex(t) {
            return Ok(k);
        }
    }
    from_base64(t).ok_or_else(bad)
}

/// Reads a secret from a file holding it as text (see the module docs). A
/// file other users may read is used, with a warning to `chmod 600` it.
pub fn read_secret_file(path: &Path) -> Result<[u8; 32], SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read { path: path.to_owned(), source })?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the cluster secret file is readable by other users; chmod 600 it");
        }
    }
    parse_secret(&text, &format!("file {}", path.display()))
}

/// The secret in [`SECRET_ENV`], if that variable is set.
pub fn secret_from_env() -> Result<Option<[u8; 32]>, SecretError> {
    match std::env::var(SECRET_ENV) {
        Ok(text) => parse_secret(&text, SECRET_ENV).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::NotUnicode),
    }
}

/// What a program that takes `--secret-file PATH` uses: the file's secret
/// if a path is given, else [`SECRET_ENV`]'s, else none.
pub fn load_secret(file: Option<&Path>) -> Result<Option<[u8; 32]>, SecretError> {
    match file {
        Some(path) => read_secret_file(path).map(Some),
        None => secret_from_env(),
    }
}

fn from_hex(t: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(t, &mut key).ok()?;
    Some(key)
}

fn from_base64(t: &str) -> Option<[u8; 32]> {
    let t = t.trim_end_matches('=');
    if t.len() != 43 {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    // 43 characters carry 258 bits: 32 bytes and two zero bits.
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::with_capacity(33));
    for &c in t.as_bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 || out.len() != 32 {
        return None; // non-canonical trailing bits
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = {
        let mut k = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            k[i] = (i as u8).wrapping_mul(37).wrapping_add(5);
            i += 1;
        }
        k
    };

    fn hex(k: &[u8; 32]) -> String {
        hex::encode(k)
    }

    #[test]
    fn hex_and_base64_forms_parse_to_the_same_key() {
        assert_eq!(parse_secret(&hex(&KEY), "t").unwrap(), KEY);
        assert_eq!(parse_secret(&format!("  {}\n", hex(&KEY).to_uppercase()), "t").unwrap(), KEY);
        // Python's `base64.b64encode` of these bytes: standard with
        // padding, then URL-safe without.
        let b64 = "BSpPdJm+4wgtUnecweYLMFV6n8TpDjNYfaLH7BE2W4A=";
        assert_eq!(parse_secret(b64, "t").unwrap(), KEY);
        assert_eq!(parse_secret(&b64.replace('+', "-").replace('/', "_").replace('=', ""), "t").unwrap(), KEY);
    }

    #[test]
    fn anything_else_is_a_format_error_without_the_text() {
        for bad in [
            "",
            "abc",
            &"g".repeat(64),
            &"0".repeat(63),
            &"0".repeat(65),
            "BSpPdJm+4wgtUnecweYLMFV6n8TpDjNYfaLH7BE2W4B=",
        ] {
            let e = parse_secret(bad, "MANTA_SECRET").unwrap_err();
            assert!(matches!(e, SecretError::Format { .. }), "{bad:?}: {e}");
            assert!(bad.is_empty() || !e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn files_are_read_and_missing_ones_say_which() {
        let dir = std::env::temp_dir().join(format!("manta-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, format!("{}\n", hex(&KEY))).unwrap();
        assert_eq!(load_secret(Some(&path)).unwrap(), Some(KEY));
        let missing = dir.join("nope");
        let e = load_secret(Some(&missing)).unwrap_err();
        assert!(matches!(e, SecretError::Read { .. }) && e.to_string().contains("nope"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
