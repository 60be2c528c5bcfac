//! Encryption on the command line: `init`, `key …`, passphrases from a
//! file, a command or the environment (never shown in output), identities
//! and write keys in files of mode 0600, and exit code 5 for a missing,
//! wrong or write-only key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::fixture::*;

/// Runs rockup with `env` as the only secret variables (stdin not a terminal).
fn rockup(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = rockup_command();
    command.args(args).envs(env.iter().copied());
    command.output().unwrap()
}

/// `out` succeeded (or exited with `code`) and never showed `secret`.
fn checked(out: Output, code: i32, secret: &str) -> Output {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(code), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "the secret was shown"
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn encryption_on_the_command_line() {
    let fx = Fixture::new(8);
    let (repo, db) = (fx.path("repo"), fx.db.to_str().unwrap().to_string());
    let repo = repo.to_str().unwrap();
    let secret = "a passphrase nobody may see";
    let file = write(&fx.path("password"), &format!("{secret}\n"));
    let by_file = [("ROCKUP_PASSWORD_FILE", file.as_str())];
    let command = format!("cat {file}");
    let by_command = [("ROCKUP_PASSWORD_COMMAND", command.as_str())];
    let by_variable = [("ROCKUP_PASSWORD", secret)];
    let kdf = ["--kdf-memory", "19", "--kdf-iterations", "2"];
    let blob_args = blob_args(&fx.files);
    let blob_args: Vec<&str> = blob_args.iter().map(String::as_str).collect();

    let init = [&["init", "--repo", repo, "--json"], &kdf[..]].concat();
    let report = json(&checked(rockup(&init, &by_file), 0, secret));
    assert_eq!(report["encrypted"], true, "{report}");
    assert_eq!(report["slots"][0]["name"], "default", "{report}");
    checked(rockup(&init, &by_file), 2, secret);

    let backup = [
        &["backup", "--repo", repo, "--db", &db, "--json"],
        &blob_args[..],
    ]
    .concat();
    checked(rockup(&backup, &by_command), 0, secret);
    let listed = json(&checked(
        rockup(&["list", "--repo", repo, "--json"], &by_variable),
        0,
        secret,
    ));
    assert_eq!(
        listed["backups"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    let no_key = checked(rockup(&["list", "--repo", repo], &[]), 5, secret);
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("ROCKUP_PASSWORD_FILE"));
    let wrong = [("ROCKUP_PASSWORD", "not it")];
    let wrong = checked(
        rockup(&["list", "--repo", repo, "--json"], &wrong),
        5,
        secret,
    );
    assert!(super::cli::error_of(&wrong)["error"]
        .as_str()
        .unwrap()
        .contains("passphrase"));

    let identity = fx.path("identity").to_str().unwrap().to_string();
    let made = json(&checked(
        rockup(&["key", "new-identity", "--out", &identity, "--json"], &[]),
        0,
        secret,
    ));
    assert_eq!(mode(&identity), 0o600);
    let recipient = made["recipient"].as_str().unwrap().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let add = [
        "key",
        "add",
        "--repo",
        repo,
        "--recipient",
        &recipient,
        "--json",
    ];
    checked(rockup(&add, &by_file), 0, secret);
    let by_identity = [("ROCKUP_IDENTITY_FILE", identity.as_str())];
    checked(rockup(&["list", "--repo", repo], &by_identity), 0, secret);

    let write_key = fx.path("write-key").to_str().unwrap().to_string();
    checked(
        rockup(
            &["key", "write-key", "--repo", repo, "--out", &write_key],
            &by_file,
        ),
        0,
        secret,
    );
    assert_eq!(mode(&write_key), 0o600);
    let write_only = [("ROCKUP_WRITE_KEY_FILE", write_key.as_str())];
    checked(rockup(&backup, &write_only), 0, secret);
    let refused = checked(rockup(&["list", "--repo", repo], &write_only), 5, secret);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("write key"));

    let second = write(&fx.path("second"), "the second passphrase\n");
    let passwd = [
        &[
            "key",
            "passwd",
            "--repo",
            repo,
            "--new-password-file",
            &second,
        ],
        &kdf[..],
    ]
    .concat();
    checked(rockup(&passwd, &by_file), 0, secret);
    checked(rockup(&["list", "--repo", repo], &by_file), 5, secret);
    let by_second = [("ROCKUP_PASSWORD_FILE", second.as_str())];
    let rotated = json(&checked(
        rockup(&["key", "rotate", "--repo", repo, "--json"], &by_second),
        0,
        secret,
    ));
    assert_eq!(rotated["generation"], 2, "{rotated}");
    let slots = json(&checked(
        rockup(&["key", "list", "--repo", repo, "--json"], &[]),
        0,
        secret,
    ));
    assert_eq!(slots["slots"].as_array().unwrap().len(), 2, "{slots}");
    let remove = ["key", "remove", "--repo", repo, "recipient-1"];
    checked(rockup(&remove, &by_second), 0, secret);
    checked(rockup(&["list", "--repo", repo], &by_identity), 5, secret);
    let last = checked(
        rockup(&["key", "remove", "--repo", repo, "default"], &by_second),
        2,
        secret,
    );
    assert!(String::from_utf8_lossy(&last.stderr).contains("only key slot"));

    let restored = fx.path("restored");
    let (to_db, to_files) = (restored.join("db"), restored.join("files"));
    let (to_db, to_files) = (to_db.to_str().unwrap(), to_files.to_str().unwrap());
    let restore = [
        "restore",
        "--repo",
        repo,
        "--db-dir",
        to_db,
        "--blob-root",
        to_files,
    ];
    checked(rockup(&restore, &by_second), 0, secret);
    assert_eq!(read_all(&fx.db), read_all(&restored.join("db")));
}
