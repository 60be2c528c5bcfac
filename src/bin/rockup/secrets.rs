//! Where the secrets of an encrypted repository come from on the command
//! line, in restic's order: a passphrase file, a passphrase command, the
//! `ROCKUP_PASSWORD` variable, then a prompt on the terminal — asked only
//! when the repository turns out to be encrypted, and never when an identity
//! or a write key was given instead. Secrets never pass through argv, logs
//! or `--json`; secret files this writes are new, and readable by their
//! owner only.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use rockup::{Credentials, Error, Identity, Result, WriteKey};

/// Largest passphrase, identity or write key file read.
const SECRET_FILE_LIMIT: u64 = 64 << 10;

/// The secrets one repository may be opened with, as given.
pub struct Secrets<'a> {
    /// Which repository (named in prompts).
    pub repo: &'a str,
    pub password_file: Option<&'a Path>,
    pub password_command: Option<&'a str>,
    /// The environment variable holding the passphrase itself.
    pub password_variable: &'static str,
    pub identity: Option<&'a Path>,
    pub write_key: Option<&'a Path>,
}

/// Whether to ask on the terminal when no passphrase source is set: once,
/// twice (a new passphrase), or never (no passphrase wanted).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Once,
    Twice,
    Never,
}

impl Secrets<'_> {
    /// The credentials: the passphrase is read when the library asks for it.
    pub fn credentials(&self, prompt: Prompt) -> Result<Credentials> {
        let mut credentials = Credentials::default();
        if let Some(path) = self.identity {
            let text = read_secret_file(path, "identity")?;
            let identity = Identity::parse(&text).map_err(|why| file_error(path, &why))?;
            credentials = credentials.with_identity(identity);
        }
        if let Some(path) = self.write_key {
            let text = read_secret_file(path, "write key")?;
            let key = WriteKey::parse(&text).map_err(|why| file_error(path, &why))?;
            credentials = credentials.with_write_key(key);
        }
        let keyless = self.identity.is_none() && self.write_key.is_none();
        if let Some(source) = self.passphrase_source() {
            credentials = credentials.with_passphrase_from(source);
        } else if keyless && prompt != Prompt::Never && std::io::stdin().is_terminal() {
            let label = format!("passphrase for {}", self.repo);
            credentials = credentials.with_passphrase_prompt(move || ask(&label, prompt));
        }
        Ok(credentials)
    }

    /// Where the passphrase comes from, if it was given (a file, a command,
    /// the environment).
    fn passphrase_source(&self) -> Option<PassphraseFn> {
        if let Some(path) = self.password_file {
            let path = path.to_path_buf();
            return Some(Box::new(move || passphrase_from_file(&path)));
        }
        if let Some(command) = self.password_command {
            let command = command.to_string();
            return Some(Box::new(move || passphrase_from_command(&command)));
        }
        if let Some(value) = std::env::var_os(self.password_variable) {
            let value = Zeroizing::new(value.to_string_lossy().into_owned());
            return Some(Box::new(move || {
                non_empty(value.clone(), "ROCKUP_PASSWORD")
            }));
        }
        None
    }
}

type PassphraseFn = Box<dyn Fn() -> std::result::Result<Zeroizing<String>, String> + Send + Sync>;

/// A new passphrase for `rockup key add` or `passwd`: from `file`, or asked
/// twice on the terminal.
pub fn new_passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let found = match file {
        Some(path) => passphrase_from_file(path),
        None if std::io::stdin().is_terminal() => ask("new passphrase", Prompt::Twice),
        None => Err("a new passphrase is needed: give --new-password-file FILE \
                     (ROCKUP_NEW_PASSWORD_FILE), or run on a terminal to be asked"
            .into()),
    };
    found.map_err(Error::Usage)
}

fn ask(label: &str, prompt: Prompt) -> std::result::Result<Zeroizing<String>, String> {
    let read = |text: &str| {
        rpassword::prompt_password(text)
            .map(Zeroizing::new)
            .map_err(|e| format!("could not read the passphrase from the terminal: {e}"))
    };
    let first = read(&format!("{label}: "))?;
    if prompt == Prompt::Twice && *read(&format!("{label} again: "))? != *first {
        return Err("the two passphrases typed differ; nothing was changed".into());
    }
    non_empty(first, "the passphrase typed")
}

/// The passphrase in a file: its content without the line ending.
fn passphrase_from_file(path: &Path) -> std::result::Result<Zeroizing<String>, String> {
    let text = read_secret_file(path, "passphrase").map_err(|e| e.to_string())?;
    let what = format!("passphrase file {}", path.display());
    non_empty(Zeroizing::new(trim_line_end(&text).to_string()), &what)
}

/// What a command prints: `sh -c command`, its output without the line ending.
fn passphrase_from_command(command: &str) -> std::result::Result<Zeroizing<String>, String> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("the passphrase command could not start: {e}"))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the passphrase command (ROCKUP_PASSWORD_COMMAND) failed: {}",
            output.status
        ));
    }
    let text = std::str::from_utf8(&stdout)
        .map_err(|_| "the passphrase command printed something that is not UTF-8".to_string())?;
    non_empty(
        Zeroizing::new(trim_line_end(text).to_string()),
        "the passphrase command's output",
    )
}

fn trim_line_end(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text)
}

fn non_empty(
    passphrase: Zeroizing<String>,
    what: &str,
) -> std::result::Result<Zeroizing<String>, String> {
    match passphrase.is_empty() {
        true => Err(format!("{what} is empty")),
        false => Ok(passphrase),
    }
}

/// Reads a small secret file (bounded).
fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = Zeroizing::new(String::new());
    file.take(SECRET_FILE_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > SECRET_FILE_LIMIT {
        return Err(file_error(
            path,
            &format!("larger than {SECRET_FILE_LIMIT} bytes: not a {what} file"),
        ));
    }
    Ok(text)
}

fn file_error(path: &Path, why: &str) -> Error {
    Error::Usage(format!("{}: {why}", path.display()))
}

/// Writes a secret to a new file readable by its owner only (0600); an
/// existing file is never replaced.
pub fn write_secret_file(path: &PathBuf, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Usage(format!(
            "{} exists; rockup never replaces a key file: choose another --out",
            path.display()
        )),
        _ => Error::Io {
            path: path.clone(),
            source,
        },
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::trim_line_end;

    #[test]
    fn only_the_line_ending_is_trimmed() {
        assert_eq!(trim_line_end("secret\n"), "secret");
        assert_eq!(trim_line_end("secret\r\n"), "secret");
        assert_eq!(trim_line_end(" secret \n\n"), " secret \n");
        assert_eq!(trim_line_end("secret"), "secret");
    }
}
