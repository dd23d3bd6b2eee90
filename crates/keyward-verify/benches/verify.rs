//! `cargo bench -p keyward-verify --bench verify`: the verification hot path
//! on a cache hit (parse + checksum + SHA-256 + cache lookup + policy +
//! last-use record), with 10,000 keys cached, on one thread.
//!
//! A plain harness (no criterion) keeps the build lean: each case runs
//! batches of iterations and prints the median, min and max ns per operation,
//! side by side in one run so ratios survive a noisy machine.
#![allow(clippy::unwrap_used)] // A benchmark: a panic is the report.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use keyward_core::clock::SystemClock;
use keyward_core::secret::{KeyFormat, KeyHash, KeyKind, OsEntropy};
use keyward_store::{KeyClass, KeyRecord, SqlStore};
use keyward_verify::credential::{Presented, Secret};
use keyward_verify::last_use::LastUseRecorder;
use keyward_verify::verifier::{CachedKey, KeyCache, Outcome, Request, Verifier};

const KEYS: usize = 10_000;
const BATCHES: usize = 15;
const PER_BATCH: usize = 200_000;

fn record(i: usize, hash: &KeyHash, start: String) -> KeyRecord {
    KeyRecord {
        tenant_id: Some("ten_bench".into()),
        name: format!("k{i}"),
        scopes: vec!["vox:read".into(), "vox:calls:*".into()],
        ip_allowlist: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        expires_at: Some(i64::MAX / 2),
        ..KeyRecord::issued(
            format!("key_{i:022}"),
            KeyClass::Tenant,
            "live".into(),
            hash.to_hex(),
            start,
            "bench".into(),
            0,
        )
    }
}

fn measure(name: &str, mut op: impl FnMut(usize)) -> f64 {
    // Warm up.
    for i in 0..PER_BATCH / 4 {
        op(i);
    }
    let mut per_op: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for i in 0..PER_BATCH {
                op(i);
            }
            t.elapsed().as_nanos() as f64 / PER_BATCH as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    let median = per_op[BATCHES / 2];
    println!(
        "{name:<44} median {median:>8.1} ns/op   min {:>8.1}   max {:>8.1}",
        per_op[0],
        per_op[BATCHES - 1]
    );
    median
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(SqlStore::open("sqlite::memory:")).unwrap();
    // The default configuration's key format, cache and last-use
    // settings, with room for every key for an hour.
    let format = KeyFormat::new([("live", "kw_live_"), ("test", "kw_test_")], "kw_root_").unwrap();
    let cache = KeyCache::new(3600, 5, KEYS * 2, 50_000);
    let verifier = Verifier::new(
        format.clone(),
        Arc::new(store),
        Arc::new(SystemClock),
        cache,
        Arc::new(LastUseRecorder::new(60)),
        None,
        10_000,
    );

    let mut secrets = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let s = format
            .generate(&KeyKind::Environment("live".into()), &OsEntropy)
            .unwrap();
        let hash = s.hash();
        let cached = CachedKey::new(record(i, &hash, s.start()), Some("Bench".into()), None);
        verifier.cache().insert(
            hash,
            Some(Arc::new(cached)),
            keyward_core::clock::Clock::now(&SystemClock),
        );
        secrets.push(s.expose().to_owned());
    }
    let presented: Vec<Presented> = secrets
        .iter()
        .map(|s| Presented::Secret(Secret::new(s.clone())))
        .collect();
    let scopes = vec!["vox:calls:create".to_owned()];
    let ip = Some("10.1.2.3".parse().unwrap());
    let req = Request {
        client_ip: ip,
        required_scopes: &scopes,
    };

    println!(
        "verify hot path, {KEYS} keys cached, {BATCHES} batches x {PER_BATCH} ops, one thread"
    );
    let parse = measure("parse + checksum", |i| {
        black_box(format.parse(black_box(&secrets[i % KEYS])).is_ok());
    });
    let hash = measure("sha256", |i| {
        black_box(KeyHash::of(black_box(&secrets[i % KEYS])));
    });
    let full = measure("verify_cached (parse+hash+lookup+policy)", |i| {
        let out = verifier.verify_cached(black_box(&presented[i % KEYS]), req);
        assert!(matches!(out, Some(Outcome::Valid(_))));
    });
    let garbage: Vec<Presented> = secrets
        .iter()
        .map(|s| {
            let mut b = s.clone().into_bytes();
            b[10] = if b[10] == b'x' { b'y' } else { b'x' };
            Presented::Secret(Secret::new(String::from_utf8(b).unwrap()))
        })
        .collect();
    measure("verify_cached, one typo (checksum rejects)", |i| {
        let out = verifier.verify_cached(black_box(&garbage[i % KEYS]), req);
        assert!(matches!(out, Some(Outcome::Denied(..))));
    });
    println!(
        "ratio verify/sha256 = {:.2}, verify/parse = {:.2}",
        full / hash,
        full / parse
    );
}
