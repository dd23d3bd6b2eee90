//! [`IdempotencyStore`]: claim, in progress, mismatch, complete, replay,
//! expiry, take-over, release, purge; and the per-scope bound on records.

use std::sync::Arc;

use keyward_store::*;

/// Two handles on one database stand for two nodes.
pub(super) async fn suite<S: IdempotencyStore + 'static>(a: Arc<S>, b: Arc<S>) {
    // Idempotency records: claim, in progress, mismatch, complete, replay,
    // expiry; an abandoned claim can be taken over after its lock.
    let claim = |key: &str, fp: &str, now: i64| IdempotencyClaim {
        scope: "ten_1/key_1".into(),
        key: key.into(),
        fingerprint: fp.into(),
        now,
        lock_until: now + 60_000,
        expires_at: now + 86_400_000,
        max_records: 1_000,
    };
    assert_eq!(
        a.claim_idempotency(&claim("k1", "f", 0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        b.claim_idempotency(&claim("k1", "f", 1)).await.unwrap(),
        ClaimOutcome::InProgress
    );
    assert_eq!(
        b.claim_idempotency(&claim("k1", "g", 1)).await.unwrap(),
        ClaimOutcome::Mismatch
    );
    let stored = StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{\"id\":1}".to_vec(),
    };
    a.complete_idempotency("ten_1/key_1", "k1", &stored, 86_400_000)
        .await
        .unwrap();
    assert_eq!(
        b.claim_idempotency(&claim("k1", "f", 2)).await.unwrap(),
        ClaimOutcome::Completed(stored.clone())
    );
    // Another scope is another key space.
    let mut other = claim("k1", "f", 3);
    other.scope = "ten_2/key_9".into();
    assert_eq!(
        a.claim_idempotency(&other).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // Past its window the key is free again.
    assert_eq!(
        a.claim_idempotency(&claim("k1", "h", 86_400_001))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    // Abandoned: in progress until the lock passes, then taken over.
    a.claim_idempotency(&claim("k2", "f", 0)).await.unwrap();
    assert_eq!(
        b.claim_idempotency(&claim("k2", "f", 59_999))
            .await
            .unwrap(),
        ClaimOutcome::InProgress
    );
    assert_eq!(
        b.claim_idempotency(&claim("k2", "f", 60_000))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    // Released: free at once.
    a.claim_idempotency(&claim("k3", "f", 0)).await.unwrap();
    a.release_idempotency("ten_1/key_1", "k3").await.unwrap();
    assert_eq!(
        b.claim_idempotency(&claim("k3", "f", 1)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // Purge removes what expired and nothing else.
    // (k3 was claimed at 1, so its record ends at 86_400_001.)
    a.complete_idempotency("ten_2/key_9", "k1", &stored, 200_000_000)
        .await
        .unwrap();
    assert_eq!(a.purge_idempotency(86_400_000).await.unwrap(), 0);
    assert_eq!(a.purge_idempotency(86_400_002).await.unwrap(), 1);
    assert_eq!(a.purge_idempotency(86_400_002).await.unwrap(), 0);
    let mut later = claim("k1", "f", 199_999_999);
    later.scope = "ten_2/key_9".into();
    assert_eq!(
        b.claim_idempotency(&later).await.unwrap(),
        ClaimOutcome::Completed(stored.clone()),
        "a completed record inside its window survives the purge"
    );
}

/// The per-key bound on idempotency records (`max_records`), the same on
/// both backends: completed records make room oldest first (free ones
/// before them), claims in flight never; concurrent claims from two nodes
/// never overshoot.
pub(super) async fn quota<S: IdempotencyStore + 'static>(a: Arc<S>, b: Arc<S>) {
    let claim = |scope: &str, key: &str, now: i64, max: u64| IdempotencyClaim {
        scope: scope.into(),
        key: key.into(),
        fingerprint: "f".into(),
        now,
        lock_until: now + 60_000,
        expires_at: now + 86_400_000,
        max_records: max,
    };
    let stored = |n: u8| StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: vec![n],
    };
    let s = "ten_q/key_q";
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(
            a.claim_idempotency(&claim(s, k, i as i64, 3))
                .await
                .unwrap(),
            ClaimOutcome::Claimed
        );
    }
    // Full of requests in flight: a new key is refused, and leaves nothing.
    for _ in 0..2 {
        assert_eq!(
            b.claim_idempotency(&claim(s, "d", 3, 3)).await.unwrap(),
            ClaimOutcome::QuotaExceeded
        );
    }
    // Keys already there answer as before.
    assert_eq!(
        b.claim_idempotency(&claim(s, "a", 3, 3)).await.unwrap(),
        ClaimOutcome::InProgress
    );
    // Another API key is another quota.
    assert_eq!(
        b.claim_idempotency(&claim("ten_q/key_other", "d", 3, 3))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    // c completes before b, but b is older: b goes first.
    a.complete_idempotency(s, "c", &stored(3), 86_400_002)
        .await
        .unwrap();
    a.complete_idempotency(s, "b", &stored(2), 86_400_001)
        .await
        .unwrap();
    assert_eq!(
        b.claim_idempotency(&claim(s, "d", 4, 3)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        a.claim_idempotency(&claim(s, "c", 5, 3)).await.unwrap(),
        ClaimOutcome::Completed(stored(3)),
        "the newer completed record stays"
    );
    // b is gone: claiming it again is a new request, which drops c, the
    // last completed record; then only requests in flight are left.
    assert_eq!(
        a.claim_idempotency(&claim(s, "b", 5, 3)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        a.claim_idempotency(&claim(s, "c", 6, 3)).await.unwrap(),
        ClaimOutcome::QuotaExceeded
    );
    // Free records go before live completed ones, even newer ones: an
    // abandoned claim (past its lock) and an expired response.
    let f = "ten_q/key_free";
    a.claim_idempotency(&claim(f, "old-done", 0, 3))
        .await
        .unwrap();
    a.complete_idempotency(f, "old-done", &stored(1), 86_400_000)
        .await
        .unwrap();
    a.claim_idempotency(&claim(f, "abandoned", 1, 3))
        .await
        .unwrap();
    let mut short = claim(f, "expired", 2, 3);
    short.expires_at = 70_000;
    a.claim_idempotency(&short).await.unwrap();
    a.complete_idempotency(f, "expired", &stored(2), 70_000)
        .await
        .unwrap();
    for (k, now) in [("new-1", 80_000), ("new-2", 80_001)] {
        assert_eq!(
            b.claim_idempotency(&claim(f, k, now, 3)).await.unwrap(),
            ClaimOutcome::Claimed
        );
    }
    assert_eq!(
        b.claim_idempotency(&claim(f, "old-done", 80_002, 3))
            .await
            .unwrap(),
        ClaimOutcome::Completed(stored(1)),
        "the live completed record outlived the free ones"
    );
    // A smaller quota than the records held (the setting was lowered)
    // drops as many completed records as needed at once.
    assert_eq!(
        b.claim_idempotency(&claim(f, "new-3", 80_003, 1))
            .await
            .unwrap(),
        ClaimOutcome::QuotaExceeded,
        "two claims in flight, quota one"
    );

    // Concurrent new keys from two nodes: never more than the quota.
    let c = "ten_q/key_concurrent";
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let req = claim(c, &format!("k{i}"), 10, 5);
        tasks.push(tokio::spawn(async move {
            store.claim_idempotency(&req).await.unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            ClaimOutcome::Claimed => claimed.push(format!("k{i}")),
            ClaimOutcome::QuotaExceeded => {}
            other => panic!("k{i}: {other:?}"),
        }
    }
    assert_eq!(claimed.len(), 5, "{claimed:?}");
    // Completed, they make room for exactly as many new ones, even when
    // these race.
    for k in &claimed {
        a.complete_idempotency(c, k, &stored(0), 86_400_010)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let req = claim(c, &format!("n{i}"), 20, 5);
        tasks.push(tokio::spawn(async move {
            store.claim_idempotency(&req).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let won = outcomes
        .iter()
        .filter(|o| **o == ClaimOutcome::Claimed)
        .count();
    assert_eq!(won, 5, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, ClaimOutcome::Claimed | ClaimOutcome::QuotaExceeded)));
    for k in &claimed {
        assert_eq!(
            a.claim_idempotency(&claim(c, k, 30, 5)).await.unwrap(),
            ClaimOutcome::QuotaExceeded,
            "{k} was dropped to make room"
        );
    }
}
