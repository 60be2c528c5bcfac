//! `verify --read-data-subset`: a share of the objects read and re-hashed,
//! the share it says; groups n/m that together read everything once, and
//! find damage in the group that holds it.

use rockup::{DataSubset, Repository, Source, VerifyOptions, VerifyReport};

use super::fixture::*;

async fn sampled(repo: &Repository, subset: DataSubset) -> VerifyReport {
    let options = with(VerifyOptions::default(), |o| {
        o.backup = "all".into();
        o.read_data_subset = Some(subset);
    });
    rockup::verify(repo, &options).await.unwrap()
}

/// Format 1 stores an object per file: hundreds of objects to sample from.
async fn backed_up(fx: &Fixture) -> (Repository, Vec<rockup::manifest::ExternalEntry>) {
    let repo = fx.local_repo();
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &format_1(fx.options()))
        .await
        .unwrap();
    let external = report.header.entries(&repo).await.unwrap();
    (repo, external)
}

#[tokio::test]
async fn a_percentage_reads_about_that_share_of_the_bytes() {
    let fx = Fixture::new(300);
    let (repo, _) = backed_up(&fx).await;
    let report = sampled(&repo, DataSubset::Fraction(0.1)).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let share = report.read_bytes as f64 / report.bytes as f64;
    eprintln!(
        "10%: {} of {} objects, {} of {} bytes ({:.1} %), {} bytes received",
        report.read_objects,
        report.objects,
        report.read_bytes,
        report.bytes,
        share * 100.0,
        report.traffic.downloaded_bytes
    );
    assert!((0.03..0.25).contains(&share), "{share}");
    assert!(report.traffic.downloaded_bytes < report.bytes / 4 + (1 << 20));
    let none = sampled(&repo, DataSubset::Bytes(1)).await;
    assert!(
        none.read_objects < 10,
        "about 1 byte: {} objects",
        none.read_objects
    );
}

#[tokio::test]
async fn groups_read_every_object_once_and_find_the_damage() {
    let fx = Fixture::new(100);
    let (repo, external) = backed_up(&fx).await;
    let victim = damage_content(&repo, &external[17].sha256).await;
    let mut read = 0;
    let mut found = Vec::new();
    for n in 1..=5 {
        let report = sampled(&repo, DataSubset::Group { n, m: 5 }).await;
        read += report.read_objects;
        found.extend(report.problems.iter().map(|p| (n, p.path.clone())));
        if n == 5 {
            assert_eq!(read, report.objects, "every object read exactly once");
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].1, victim);
}
