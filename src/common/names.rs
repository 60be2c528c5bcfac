//! Names with rules: RocksDB's file names (table files among them), external
//! files' relative paths, record keys shown to humans, and this machine's host
//! name.

/// Whether `name` is a file RocksDB keeps in a database directory that a backup
/// may restore: `NNNNNN.sst|.blob|.log`, `MANIFEST-N`, `OPTIONS-N`, `CURRENT`, `IDENTITY`.
pub fn is_rocksdb_file_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name {
        "CURRENT" | "IDENTITY" => true,
        _ => {
            if let Some(n) = name
                .strip_prefix("MANIFEST-")
                .or_else(|| name.strip_prefix("OPTIONS-"))
            {
                return digits(n);
            }
            match name.rsplit_once('.') {
                Some((n, "sst" | "blob" | "log")) => digits(n),
                _ => false,
            }
        }
    }
}

/// Whether a RocksDB file is a table file — an SST or a RocksDB blob file —
/// which backups share under a unique name.
pub fn is_table_file(name: &str) -> bool {
    name.ends_with(".sst") || name.ends_with(".blob")
}

/// Normalizes a reference path: relative, UTF-8, `/`-separated, without `.`,
/// empty components or `..`. Absolute paths and `..` are invalid references.
pub fn normalize_relative_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("path contains ..".into()),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("empty path".into());
    }
    Ok(parts.join("/"))
}

/// A record key shown to humans, losslessly: UTF-8 text, or `0x` + hex.
pub fn display_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with("0x") && !text.chars().any(char::is_control) => {
            text.to_string()
        }
        _ => format!("0x{}", hex::encode(key)),
    }
}

/// This machine's host name, as recorded in manifests and locks.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_file_names() {
        for ok in [
            "000012.sst",
            "000001.log",
            "7.blob",
            "MANIFEST-000005",
            "OPTIONS-000007",
            "CURRENT",
            "IDENTITY",
        ] {
            assert!(is_rocksdb_file_name(ok), "{ok}");
        }
        for bad in [
            "../CURRENT",
            "LOCK",
            "a.sst",
            ".sst",
            "MANIFEST-",
            "x/000012.sst",
            "000012.sst/",
            "LOG",
            "/etc/passwd",
        ] {
            assert!(!is_rocksdb_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn paths_are_normalized_and_confined() {
        assert_eq!(normalize_relative_path("./a//b/./c").unwrap(), "a/b/c");
        for bad in ["/etc/passwd", "a/../../b", "..", "", "./", "a/\0"] {
            assert!(normalize_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_display_losslessly() {
        assert_eq!(display_key(b"file:1"), "file:1");
        assert_eq!(display_key(b"\x00\xff"), "0x00ff");
        assert_eq!(display_key(b"0x12"), "0x30783132");
    }
}
