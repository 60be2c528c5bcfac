//! A forged config of an encrypted repository: public keys replaced, KDF
//! parameters set absurdly high or low, key slots of bad lengths or too
//! many, an unknown cipher, a config too large to read. Every key holder
//! (passphrase, write key) refuses it in bounded time, names what is wrong,
//! writes nothing and places nothing.

use std::time::{Duration, Instant};

use rockup::{keys, Credentials, Repository, Source};
use serde_json::Value;

use super::fixture::*;

/// An encrypted repository with one backup, and a write key for it.
async fn repository(fx: &Fixture) -> (Repository, rockup::WriteKey) {
    let repo = encrypted(memory_repo()).await;
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let write_key = keys::write_key(&repo).await.unwrap();
    (repo, write_key)
}

/// The config with `forge` applied to its JSON.
async fn forge(repo: &Repository, forge: impl FnOnce(&mut Value)) {
    let bytes = get_object(repo, "rockup.json").await.unwrap();
    let mut config: Value = serde_json::from_slice(&bytes).unwrap();
    forge(&mut config);
    put_object(repo, "rockup.json", serde_json::to_vec(&config).unwrap()).await;
}

fn passphrase_slot(config: &mut Value) -> &mut Value {
    &mut config["encryption"]["slots"][0]
}

/// What a forgery is, what it does to the config, and a word the refusal names.
type Forgery = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

fn forgeries() -> Vec<Forgery> {
    vec![
        (
            "public key replaced",
            Box::new(|c| {
                let keys = c["encryption"]["public_keys"].as_array_mut().unwrap();
                keys.last_mut().unwrap()["public_key"] = "11".repeat(32).into();
            }),
            "public keys",
        ),
        (
            "Argon2id memory of 4 TiB",
            Box::new(|c| passphrase_slot(c)["kdf"]["memory_kib"] = u32::MAX.into()),
            "outside what rockup accepts",
        ),
        (
            "Argon2id of a million passes",
            Box::new(|c| passphrase_slot(c)["kdf"]["iterations"] = 1_000_000.into()),
            "outside what rockup accepts",
        ),
        (
            "Argon2id of 8 KiB",
            Box::new(|c| passphrase_slot(c)["kdf"]["memory_kib"] = 8.into()),
            "outside what rockup accepts",
        ),
        (
            "salt of one byte",
            Box::new(|c| passphrase_slot(c)["salt"] = "00".into()),
            "salt",
        ),
        (
            "wrapped key one byte short",
            Box::new(|c| {
                let wrapped = passphrase_slot(c)["wrapped"].as_str().unwrap().to_string();
                passphrase_slot(c)["wrapped"] = wrapped[2..].into();
            }),
            "wrapped",
        ),
        (
            "65 key slots",
            Box::new(|c| {
                let slot = passphrase_slot(c).clone();
                let slots = c["encryption"]["slots"].as_array_mut().unwrap();
                for n in 0..64 {
                    let mut extra = slot.clone();
                    extra["name"] = format!("extra-{n}").into();
                    slots.push(extra);
                }
            }),
            "key slots",
        ),
        (
            "unknown cipher",
            Box::new(|c| c["encryption"]["cipher"] = "rot13".into()),
            "cipher",
        ),
        (
            "a config of 2 MiB",
            Box::new(|c| c["padding"] = "x".repeat(2 << 20).into()),
            "",
        ),
    ]
}

#[tokio::test]
async fn a_forged_config_is_refused_by_every_key_in_bounded_time() {
    let fx = Fixture::new(10);
    for (what, forgery, named) in forgeries() {
        let (repo, write_key) = repository(&fx).await;
        forge(&repo, forgery).await;
        let before = all_objects(&repo).await;
        let holders = [
            ("passphrase", with_passphrase(&repo, PASSPHRASE)),
            (
                "write key",
                reopened(&repo, Credentials::default().with_write_key(write_key)),
            ),
        ];
        for (holder, handle) in holders {
            let started = Instant::now();
            let err = rockup::backup(&handle, Source::Db(fx.db.clone()), &fx.options())
                .await
                .unwrap_err();
            assert!(err.to_string().contains(named), "{what}, {holder}: {err}");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: unbounded"
            );
            if holder == "passphrase" {
                let target = fx.path("restored");
                let options = restoring("latest", target.join("db"), Some(target.join("files")));
                let err = rockup::restore(&handle, &options).await.unwrap_err();
                assert!(err.to_string().contains(named), "{what}, restore: {err}");
                assert!(entries(&target.join("db")).is_empty(), "{what}: placed");
                assert!(entries(&target.join("files")).is_empty(), "{what}: placed");
            }
        }
        assert_eq!(
            before,
            all_objects(&repo).await,
            "{what}: something was written"
        );
    }
}
