//! `rockup init` and `rockup key …`: creating a repository and managing an
//! encrypted one's keys. Each prints what it did on stderr and returns the
//! JSON document — slots by name and kind, never a secret.

use serde_json::{json, Value};

use crate::args::{
    InitArgs, KeyAddArgs, KeyArgs, KeyCommand, KeyOutArgs, KeyPasswdArgs, KeyRemoveArgs,
    KeyRotateArgs, NewIdentityArgs, RepoArgs,
};
use crate::commands::{document, repository, repository_to_create};
use crate::output::say;
use crate::secrets::{new_passphrase, write_secret_file, Prompt};
use rockup::{keys, Identity, InitOptions, KeysReport, NewKey, Result};

pub async fn init(args: InitArgs) -> Result<(Value, i32)> {
    // With recipients only, no passphrase is asked for (one from a file,
    // command or ROCKUP_PASSWORD still makes a slot).
    let prompt = match args.recipients.is_empty() && !args.no_encryption {
        true => Prompt::Twice,
        false => Prompt::Never,
    };
    let repo = repository_to_create(&args.repo, prompt)?;
    let mut options = InitOptions::default();
    options.encryption = !args.no_encryption;
    options.kdf = args.kdf.params();
    options.recipients = args.recipients.clone();
    let report = rockup::init(&repo, &options).await?;
    match report.encrypted {
        true => say!(
            "created encrypted repository {} ({}); keep a copy of its key: without one, \
             nobody can read it",
            repo.name(),
            report.repository_id.as_deref().unwrap_or_default()
        ),
        false => say!("created plaintext repository {}", repo.name()),
    }
    print_slots(&report);
    Ok((document(&report), 0))
}

pub async fn key(args: KeyArgs) -> Result<(Value, i32)> {
    match args.command {
        KeyCommand::List(args) => list(args).await,
        KeyCommand::Add(args) => add(args).await,
        KeyCommand::Remove(args) => remove(args).await,
        KeyCommand::Passwd(args) => passwd(args).await,
        KeyCommand::Rotate(args) => rotate(args).await,
        KeyCommand::WriteKey(args) => write_key(args).await,
        KeyCommand::NewIdentity(args) => new_identity(args),
    }
}

async fn list(args: RepoArgs) -> Result<(Value, i32)> {
    let repo = repository(&args, Prompt::Never)?;
    let report = keys::list(&repo).await?;
    if !report.encrypted {
        eprintln!("{} is not encrypted: it has no keys", repo.name());
    }
    print_slots(&report);
    Ok((document(&report), 0))
}

async fn add(args: KeyAddArgs) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let listed = keys::list(&repo).await?;
    let kind = match args.recipient {
        Some(_) => "recipient",
        None => "passphrase",
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| free_name(&listed, kind));
    let key = match args.recipient {
        Some(recipient) => NewKey::Recipient { name, recipient },
        None => NewKey::Passphrase {
            name,
            passphrase: new_passphrase(args.new.new_password_file.as_deref())?,
            kdf: args.new.kdf.params(),
        },
    };
    changed(keys::add(&repo, key).await?, "added a key slot")
}

async fn remove(args: KeyRemoveArgs) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let report = keys::remove(&repo, &args.name).await?;
    changed(report, &format!("removed key slot {:?}", args.name))
}

async fn passwd(args: KeyPasswdArgs) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let passphrase = new_passphrase(args.new.new_password_file.as_deref())?;
    let report = keys::passwd(
        &repo,
        args.name.as_deref(),
        passphrase,
        args.new.kdf.params(),
    )
    .await?;
    changed(report, "changed the passphrase")
}

async fn rotate(args: KeyRotateArgs) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let report = keys::rotate(&repo, args.remove_other_passphrases).await?;
    for name in &report.removed {
        say!("removed passphrase slot {name:?}: add it back with `rockup key add`");
    }
    let generation = report.generation.unwrap_or_default();
    changed(
        report,
        &format!("rotated: generation {generation} seals everything written from now on"),
    )
}

async fn write_key(args: KeyOutArgs) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let key = keys::write_key(&repo).await?;
    let text = format!(
        "# rockup write key of {}: backs up, reads nothing back\n{}\n",
        repo.name(),
        key.encode().as_str()
    );
    write_secret_file(&args.out, &text)?;
    say!(
        "wrote the write key to {}; a host holding it backs up with --write-key and cannot \
         read, restore or prune",
        args.out.display()
    );
    Ok((json!({"write_key_file": args.out}), 0))
}

fn new_identity(args: NewIdentityArgs) -> Result<(Value, i32)> {
    let identity = keys::new_identity();
    let recipient = write_identity(&args.out, &identity)?;
    say!("wrote a new identity to {}", args.out.display());
    eprintln!("public key: {recipient}");
    Ok((
        json!({"identity_file": args.out, "recipient": recipient}),
        0,
    ))
}

/// Writes `identity` into the new file `path` (mode 0600), as age does;
/// returns its recipient.
pub fn write_identity(path: &std::path::Path, identity: &Identity) -> Result<String> {
    let recipient = identity.recipient().to_string();
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.encode().as_str()
    );
    write_secret_file(&path.to_path_buf(), &text)?;
    Ok(recipient)
}

/// `passphrase-N` or `recipient-N`, the first not taken.
fn free_name(report: &KeysReport, kind: &str) -> String {
    (1..)
        .map(|n| format!("{kind}-{n}"))
        .find(|name| report.slots.iter().all(|s| &s.name != name))
        .expect("some number is free")
}

fn changed(report: KeysReport, what: &str) -> Result<(Value, i32)> {
    eprintln!("{what}");
    print_slots(&report);
    Ok((document(&report), 0))
}

fn print_slots(report: &KeysReport) {
    if let Some(generation) = report.generation {
        eprintln!("  master key generation {generation}; key slots:");
    }
    for slot in &report.slots {
        let detail = match (&slot.recipient, &slot.kdf) {
            (Some(recipient), _) => recipient.clone(),
            (None, Some(kdf)) => format!(
                "argon2id, {} MiB, {} passes, {} lanes",
                kdf.memory_kib / 1024,
                kdf.iterations,
                kdf.parallelism
            ),
            (None, None) => String::new(),
        };
        eprintln!("    {:<24} {:<11} {detail}", slot.name, slot.kind);
    }
}
