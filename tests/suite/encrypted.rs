//! Client-side encryption end to end: what the bucket sees (no marker, no
//! content hash, in names or bytes — after a backup, an unchanged backup, a
//! copy and a prune that repacks), tampering with every kind of object, keys
//! missing, wrong or removed, write-only hosts, rotation, copies between
//! encrypted and plaintext repositories, and nonces that never repeat.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rocksdb::DB;
use rockup::manifest::{DbFileEntry, ExternalEntry};
use rockup::{Repository, Source};

use super::fixture::*;

/// In every marked file and value; never in an encrypted repository.
const MARKER: &str = "MARKER-9c1f-this-plaintext-must-not-leak";
/// Size of the marked files stored as objects of their own (many chunks).
const LARGE: usize = 1_500_000;

/// Writes `data` as an external file and the record naming it.
fn put_file(db: &DB, files: &Path, rel: &str, data: &[u8]) {
    let path = files.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    let value = serde_json::json!({"path": rel, "size": data.len(), "sha256": sha256_hex(data)});
    let cf = db.cf_handle("files").unwrap();
    db.put_cf(&cf, format!("file:m-{rel}"), value.to_string())
        .unwrap();
}

/// The fixture's files and records, and twelve more that carry [`MARKER`] —
/// two of them [`LARGE`] (the same size, so that they can be swapped) — and
/// marked values, flushed and in the WAL.
fn marked() -> Fixture {
    let fx = Fixture::new(30);
    let db = open_rw(&fx.db);
    for i in 0..12 {
        let size = if i < 2 { LARGE } else { 3000 + i * 100 };
        let mut data = content(100 + i, size);
        let mark = format!("{MARKER}-file-{i}");
        data[size / 3..size / 3 + mark.len()].copy_from_slice(mark.as_bytes());
        put_file(&db, &fx.files, &format!("marked/{i}.bin"), &data);
        db.put(format!("value-{i}"), format!("{MARKER}-value-{i}"))
            .unwrap();
        if i == 6 {
            db.flush().unwrap();
        }
    }
    fx
}

fn backup_options(fx: &Fixture) -> rockup::BackupOptions {
    with(fx.options(), |o| o.cache_dir = Some(fx.path("cache")))
}

async fn back_up(repo: &Repository, fx: &Fixture) -> rockup::BackupReport {
    let report = rockup::backup(repo, Source::Db(fx.db.clone()), &backup_options(fx))
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report
}

/// What must never show in an encrypted repository: the marker, and every
/// content hash its backups record, raw or in hex.
struct Secrets {
    raw: HashSet<[u8; 32]>,
    hex: HashSet<String>,
}

impl Secrets {
    /// The hashes of every file `repo`'s backups record (read with the full key).
    async fn of(repo: &Repository) -> Self {
        let mut secrets = Self {
            raw: HashSet::new(),
            hex: HashSet::new(),
        };
        for listed in rockup::list(repo).await.unwrap() {
            let header = listed.header.unwrap();
            let db: Vec<DbFileEntry> = header.entries(repo).await.unwrap();
            let external: Vec<ExternalEntry> = header.entries(repo).await.unwrap();
            let hashes = db.iter().map(|e| e.sha256);
            for sha256 in hashes.chain(external.iter().map(|e| e.sha256)) {
                secrets.raw.insert(*sha256.as_bytes());
                secrets.hex.insert(sha256.to_string());
            }
        }
        assert!(secrets.raw.len() > 40, "{} hashes", secrets.raw.len());
        secrets
    }

    /// What `objects` reveal: `(object, what)` for each leak.
    fn leaks(&self, objects: &BTreeMap<String, Bytes>) -> Vec<(String, &'static str)> {
        let mut leaks = Vec::new();
        for (key, bytes) in objects {
            let lower = key.to_ascii_lowercase();
            if self.hex.iter().any(|hex| lower.contains(hex.as_str())) {
                leaks.push((key.clone(), "a content hash in its name"));
            }
            if bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                leaks.push((key.clone(), "the marker"));
            }
            if bytes.windows(32).any(|w| self.raw.contains(w)) {
                leaks.push((key.clone(), "a raw content hash"));
            }
            if self.hex_in(bytes) {
                leaks.push((key.clone(), "a content hash in hex"));
            }
        }
        leaks
    }

    /// Whether a run of 64 hex digits in `bytes` is a recorded hash.
    fn hex_in(&self, bytes: &[u8]) -> bool {
        bytes
            .split(|b| !b.is_ascii_hexdigit())
            .filter(|run| run.len() >= 64)
            .any(|run| {
                let run = String::from_utf8_lossy(run).to_ascii_lowercase();
                (0..=run.len() - 64).any(|at| self.hex.contains(&run[at..at + 64]))
            })
    }
}

/// The test can fail: in a plaintext repository (without compression) the
/// same dataset shows the marker and its hashes.
#[tokio::test]
async fn a_plaintext_repository_shows_what_an_encrypted_one_hides() {
    let fx = marked();
    let repo = memory_repo();
    let options = with(backup_options(&fx), |o| o.compression_level = 0);
    rockup::backup(&repo, Source::Db(fx.db.clone()), &options)
        .await
        .unwrap();
    let secrets = Secrets::of(&repo).await;
    let leaks: BTreeSet<&str> = secrets
        .leaks(&all_objects(&repo).await)
        .into_iter()
        .map(|(_, what)| what)
        .collect();
    for what in [
        "the marker",
        "a content hash in its name",
        "a content hash in hex",
    ] {
        assert!(leaks.contains(what), "{what}: {leaks:?}");
    }
}

/// No marker and no content hash in any object's name or bytes: after a
/// backup, an unchanged backup, a copy to another encrypted repository, and
/// a prune that repacks.
#[tokio::test]
async fn the_bucket_sees_no_plaintext_and_no_content_hash() {
    let fx = marked();
    let repo = encrypted(memory_repo()).await;
    let first = back_up(&repo, &fx).await;
    let secrets = Secrets::of(&repo).await;
    let clean = |objects: BTreeMap<String, Bytes>, when: &str| {
        let leaks = secrets.leaks(&objects);
        assert!(leaks.is_empty(), "{when}: {leaks:?}");
        assert!(objects.len() > 10, "{when}: {} objects", objects.len());
    };
    clean(all_objects(&repo).await, "after a backup");

    let unchanged = back_up(&repo, &fx).await;
    assert!(unchanged.header.stats.uploaded_bytes < first.header.stats.uploaded_bytes / 10);
    clean(all_objects(&repo).await, "after an unchanged backup");

    let target = encrypted(memory_repo()).await;
    let target = with_passphrase(&target, PASSPHRASE);
    let copy = with(rockup::CopyOptions::default(), |o| o.backup = "all".into());
    rockup::copy(&repo, &target, &copy).await.unwrap();
    clean(all_objects(&target).await, "after a copy");

    {
        let db = open_rw(&fx.db);
        let cf = db.cf_handle("files").unwrap();
        for i in (0..30).step_by(2) {
            db.delete_cf(&cf, format!("file:{i:06}")).unwrap();
        }
    }
    back_up(&repo, &fx).await;
    let pruned = rockup::prune(&repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    assert!(pruned.repack.packs_repacked >= 1, "{pruned:?}");
    clean(all_objects(&repo).await, "after a prune that repacked");
    let restored = fx.path("restored");
    rockup::restore(
        &repo,
        &restoring("latest", restored.join("db"), Some(restored.join("files"))),
    )
    .await
    .unwrap();
    assert_eq!(read_all(&fx.db), read_all(&restored.join("db")));
}

/// Copies the directory tree at `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_tree(&entry.path(), &target),
            false => drop(std::fs::copy(entry.path(), target).unwrap()),
        }
    }
}

fn local(dir: &Path) -> Repository {
    Repository::open(&format!("file://{}", dir.display()), &[]).unwrap()
}

/// An encrypted local repository holding one backup of a marked fixture.
async fn one_backup() -> (Fixture, Repository, rockup::BackupReport) {
    let fx = marked();
    let repo = encrypted(local(&fx.path("repo"))).await;
    let report = back_up(&repo, &fx).await;
    (fx, repo, report)
}

/// In a copy of the repository at `fx/repo` changed by `damage`, restoring
/// `backup` fails and places nothing, and deep verification names `named`.
async fn refused(
    fx: &Fixture,
    trial: &str,
    backup: &str,
    damage: impl FnOnce(&Path),
    named: &[&str],
) {
    let dir = fx.path(&format!("trial-{trial}"));
    copy_tree(&fx.path("repo"), &dir);
    damage(&dir);
    let repo = with_passphrase(&local(&dir), PASSPHRASE);
    let target = fx.path(&format!("restore-{trial}"));
    let options = restoring(backup, target.join("db"), Some(target.join("files")));
    let err = rockup::restore(&repo, &options).await.unwrap_err();
    assert!(matches!(err.exit_code(), 1 | 3), "{trial}: {err}");
    for placed in ["db", "files"] {
        assert!(
            entries(&target.join(placed)).is_empty(),
            "{trial}: {placed} holds files"
        );
    }
    let verify = with(rockup::VerifyOptions::default(), |o| {
        o.backup = backup.into();
        o.deep = true;
    });
    let named_by = match rockup::verify(&repo, &verify).await {
        Ok(report) => report
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.detail))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => e.to_string(),
    };
    for name in named {
        assert!(
            named_by.contains(name),
            "{trial}: verify --deep does not name {name}: {named_by}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn truncate_by(path: &Path, cut: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len - cut).unwrap();
}

/// Every object one backup needs, by kind: one flipped byte in any of them,
/// or any of them cut short, and the restore refuses, placing nothing, and
/// deep verification names the object.
#[tokio::test]
async fn a_flipped_byte_or_a_cut_in_any_object_is_refused_and_named() {
    let (fx, repo, _) = one_backup().await;
    let objects = all_objects(&repo).await;
    let kinds: BTreeSet<&str> = objects
        .keys()
        .map(|k| k.split('/').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "backups",
            "content",
            "index",
            "keys",
            "packs",
            "rockup.json",
            "sst"
        ]),
        "every kind of object is tried"
    );
    for (n, (key, bytes)) in objects.iter().enumerate() {
        if key == "rockup.json" {
            continue;
        }
        // What verify names: the object, or for a session key, the objects
        // it seals (all of them, the manifest first).
        let named: &[&str] = if key.starts_with("keys/") {
            &["keys/session-"]
        } else {
            &[key]
        };
        let path = |dir: &Path| dir.join(key);
        refused(
            &fx,
            &format!("flip-{n}"),
            "latest",
            |dir| flip_middle_byte(&path(dir)),
            named,
        )
        .await;
        // A cut at the last chunk boundary of a large object, else one byte.
        let cut = match bytes.len() as u64 {
            len if len > 2 * 65_600 => (len - 28) % (65_536 + 16),
            _ => 1,
        };
        refused(
            &fx,
            &format!("cut-{n}"),
            "latest",
            |dir| truncate_by(&path(dir), cut),
            named,
        )
        .await;
    }
}

/// Two content objects of the same size swapped, a manifest replayed from
/// another backup, and a backup replayed from another repository (sealed
/// under the same passphrase): each refused, nothing placed, and named.
#[tokio::test]
async fn an_object_swapped_or_replayed_is_refused_and_named() {
    let (fx, repo, first) = one_backup().await;
    let second = {
        put_file(
            &open_rw(&fx.db),
            &fx.files,
            "later.bin",
            &content(900, 5000),
        );
        back_up(&repo, &fx).await
    };
    let objects = all_objects(&repo).await;
    let (a, b) = equal_sized_content(&objects);
    refused(
        &fx,
        "swap",
        "latest",
        |dir| {
            let (pa, pb) = (dir.join(&a), dir.join(&b));
            let (ba, bb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
            std::fs::write(&pa, bb).unwrap();
            std::fs::write(&pb, ba).unwrap();
        },
        &[&a, &b],
    )
    .await;

    let (old, new) = (first.header.backup_id, second.header.backup_id);
    let replayed = manifest_key(&new);
    refused(
        &fx,
        "replay-backup",
        &new.to_string(),
        |dir| {
            std::fs::copy(dir.join(manifest_key(&old)), dir.join(&replayed)).unwrap();
        },
        &[&replayed],
    )
    .await;

    let other = encrypted(local(&fx.path("other-repo"))).await;
    let foreign = back_up(&other, &fx).await.header.backup_id;
    refused(
        &fx,
        "replay-repository",
        &foreign.to_string(),
        |dir| {
            let from = fx.path("other-repo");
            copy_tree(
                &from.join(format!("backups/{foreign}")),
                &dir.join(format!("backups/{foreign}")),
            );
            copy_tree(&from.join("keys"), &dir.join("keys"));
        },
        &[&format!("backups/{foreign}")],
    )
    .await;
}

/// Two content objects of one size (the two large marked files).
fn equal_sized_content(objects: &BTreeMap<String, Bytes>) -> (String, String) {
    let mut by_size: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
    for (key, bytes) in objects.iter().filter(|(k, _)| k.starts_with("content/")) {
        by_size.entry(bytes.len()).or_default().push(key);
    }
    let pair = by_size.values().find(|keys| keys.len() >= 2);
    let pair = pair.expect("two content objects of the same size");
    (pair[0].clone(), pair[1].clone())
}

/// A plaintext repository copied to an encrypted one, that to one with
/// another passphrase, and that back to plaintext: each restores the same
/// database and files, and neither encrypted one shows what the plaintext
/// one does.
#[tokio::test]
async fn copies_between_plaintext_and_encrypted_repositories_re_encrypt() {
    let fx = marked();
    let plain = memory_repo();
    back_up(&plain, &fx).await;
    let secrets = Secrets::of(&plain).await;
    let first = encrypted(memory_repo()).await;
    let second = {
        let repo = with_passphrase(&memory_repo(), "another passphrase entirely");
        let options = with(rockup::InitOptions::default(), |o| o.kdf = fast_kdf());
        rockup::init(&repo, &options).await.unwrap();
        repo
    };
    let back = memory_repo();
    let all = with(rockup::CopyOptions::default(), |o| o.backup = "all".into());
    for (from, to) in [(&plain, &first), (&first, &second), (&second, &back)] {
        rockup::copy(from, to, &all).await.unwrap();
    }
    for (n, repo) in [&first, &second].into_iter().enumerate() {
        let leaks = secrets.leaks(&all_objects(repo).await);
        assert!(leaks.is_empty(), "encrypted copy {n}: {leaks:?}");
    }
    for (n, repo) in [&first, &second, &back].into_iter().enumerate() {
        let restored = fx.path(&format!("restored-{n}"));
        let files = restored.join("files");
        rockup::restore(
            repo,
            &restoring("latest", restored.join("db"), Some(files.clone())),
        )
        .await
        .unwrap();
        assert_eq!(read_all(&fx.db), read_all(&restored.join("db")), "copy {n}");
        assert_eq!(tree(&fx.files), tree(&files), "copy {n}");
    }
}

/// The (session, object number) of every sealed object and pack entry: the
/// pair the object's key and nonces derive from.
fn sealed_headers(objects: &BTreeMap<String, Bytes>) -> Vec<([u8; 16], u64)> {
    const SEALED: &[u8] = b"RKS1";
    const ENTRY: &[u8] = b"RK\x01\x02RKS1";
    let header = |at: &[u8]| {
        let session: [u8; 16] = at[4..20].try_into().unwrap();
        (session, u64::from_be_bytes(at[20..28].try_into().unwrap()))
    };
    let mut headers = Vec::new();
    for (key, bytes) in objects {
        if key.starts_with("packs/") {
            let entries = (0..bytes.len() - ENTRY.len()).filter(|&at| &bytes[at..at + 8] == ENTRY);
            headers.extend(entries.map(|at| header(&bytes[at + 4..])));
        } else if bytes.starts_with(SEALED) {
            headers.push(header(bytes));
        }
    }
    headers
}

/// Two hosts backing up at once with 16 uploads each, and again: no two
/// sealed objects or pack entries share a session and number, and each run
/// made a session of its own.
#[tokio::test]
async fn nonces_never_repeat_across_hosts_and_concurrent_uploads() {
    let (one, two) = (marked(), Fixture::new(60));
    let repo = encrypted(memory_repo()).await;
    let sixteen = |fx: &Fixture| with(backup_options(fx), |o| o.jobs = 16.into());
    for _ in 0..2 {
        let (a, b) = (
            with_passphrase(&repo, PASSPHRASE),
            with_passphrase(&repo, PASSPHRASE),
        );
        let (oa, ob) = (sixteen(&one), sixteen(&two));
        let (ra, rb) = tokio::join!(
            rockup::backup(&a, Source::Db(one.db.clone()), &oa),
            rockup::backup(&b, Source::Db(two.db.clone()), &ob),
        );
        ra.unwrap();
        rb.unwrap();
        put_file(
            &open_rw(&one.db),
            &one.files,
            "more.bin",
            &content(77, 9000),
        );
    }
    let objects = all_objects(&repo).await;
    let headers = sealed_headers(&objects);
    let distinct: HashSet<_> = headers.iter().collect();
    assert_eq!(
        distinct.len(),
        headers.len(),
        "a (session, number) repeated"
    );
    let sessions: HashSet<_> = headers.iter().map(|(s, _)| s).collect();
    let stored = objects
        .keys()
        .filter(|k| k.starts_with("keys/session-"))
        .count();
    assert!(
        sessions.len() >= 4 && sessions.len() <= stored,
        "{} sessions, {stored} stored",
        sessions.len()
    );
    assert!(headers.len() > 100, "{} sealed", headers.len());
}

/// Bytes of a sealed chunk (64 KiB and a 16-byte tag) and of the header
/// before the first.
const SEALED_CHUNK: usize = 65_536 + 16;
const SEALED_HEADER: usize = 28;

/// A change made to an object's bytes.
type Edit = dyn Fn(&mut Vec<u8>);

/// A large content object with a chunk taken out, a chunk added at its end,
/// or two chunks trading places: each is damage, refused and named.
#[tokio::test]
async fn chunks_removed_added_or_reordered_are_damage() {
    let (fx, repo, _) = one_backup().await;
    let objects = all_objects(&repo).await;
    let (large, _) = equal_sized_content(&objects);
    assert!(
        objects[&large].len() > 10 * SEALED_CHUNK,
        "{large} is large"
    );
    let chunk = |n: usize| SEALED_HEADER + n * SEALED_CHUNK..SEALED_HEADER + (n + 1) * SEALED_CHUNK;
    let edits: [(&str, Box<Edit>); 3] = [
        ("chunk-removed", Box::new(move |b| drop(b.drain(chunk(3))))),
        (
            "chunk-added",
            Box::new(move |b| {
                let last = b[b.len() - SEALED_CHUNK..].to_vec();
                b.extend_from_slice(&last);
            }),
        ),
        (
            "chunks-reordered",
            Box::new(move |b| {
                let (two, five) = (b[chunk(2)].to_vec(), b[chunk(5)].to_vec());
                b[chunk(2)].copy_from_slice(&five);
                b[chunk(5)].copy_from_slice(&two);
            }),
        ),
    ];
    for (trial, edit) in edits {
        let damage = |dir: &Path| {
            let path = dir.join(&large);
            let mut bytes = std::fs::read(&path).unwrap();
            edit(&mut bytes);
            std::fs::write(&path, bytes).unwrap();
        };
        refused(&fx, trial, "latest", damage, &[&large]).await;
    }
}
