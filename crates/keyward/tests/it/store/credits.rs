//! [`CreditStore`]: balances, reservations by two nodes, settlement,
//! recovery, grants and adjustments (idempotent, never below zero),
//! refills, the ledger; audit events of operator changes.

use std::sync::Arc;

use keyward_store::*;

use super::audit;

/// Two handles on one database stand for two nodes.
pub(super) async fn suite<S: CreditStore + AuditStore + 'static>(a: Arc<S>, b: Arc<S>) {
    let t = "ten_credits";
    let reserve = |node: &str, min: i64, want: i64| ReserveRequest {
        tenant_id: t.into(),
        node_id: node.into(),
        min,
        want,
        refill: None,
    };
    // A tenant that never had credits has none, and reserves nothing.
    assert_eq!(a.credit_account(t, None, 10).await.unwrap().balance, 0);
    let r = a.reserve_credits(&reserve("n1", 1, 5), 10).await.unwrap();
    assert_eq!(r.granted, 0);

    // Grant 10: idempotent by key, and the ledger and audit log record it once.
    let grant = |key: Option<&str>, amount: i64, fp: &str| CreditChange {
        id: format!("led_{fp}_{amount}"),
        tenant_id: t.into(),
        kind: LedgerKind::Grant,
        amount,
        at: 20,
        actor: "key_root".into(),
        reason: Some("welcome".into()),
        idempotency_key: key.map(str::to_owned),
        fingerprint: fp.into(),
        refill: None,
    };
    let first = a
        .change_credits(
            &grant(Some("g1"), 10, "fp1"),
            &audit("credits.granted", t, 20),
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.entry.balance_after, 10);
    let again = b
        .change_credits(
            &grant(Some("g1"), 10, "fp1"),
            &audit("credits.granted", t, 21),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.entry, first.entry);
    assert!(matches!(
        a.change_credits(
            &grant(Some("g1"), 11, "fp2"),
            &audit("credits.granted", t, 22)
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(a.credit_account(t, None, 23).await.unwrap().balance, 10);

    // Reservations leave the balance at once and never exceed it; below
    // `min` nothing is taken.
    let r = a.reserve_credits(&reserve("n1", 3, 8), 30).await.unwrap();
    assert_eq!((r.granted, r.balance), (8, 2));
    assert_eq!(
        b.reserve_credits(&reserve("n2", 3, 5), 30)
            .await
            .unwrap()
            .granted,
        0
    );
    let r = b.reserve_credits(&reserve("n2", 2, 5), 30).await.unwrap();
    assert_eq!((r.granted, r.balance), (2, 0));
    // n1 spent 6 of its 8 (key_c, capped, spent 5 of them) and gives 2 back.
    a.settle_credits(
        "n1",
        &[Settlement {
            tenant_id: t.into(),
            spent: 6,
            requests: 2,
            release: 2,
            key_id: None,
            key_spends: vec![("key_c".into(), 5)],
        }],
        31,
    )
    .await
    .unwrap();
    assert_eq!(a.credit_account(t, None, 32).await.unwrap().balance, 2);
    assert_eq!(a.key_credits_spent("key_c").await.unwrap(), 5);
    assert_eq!(a.key_credits_spent("key_none").await.unwrap(), 0);
    // n2 stops without settling: another node counts its 2 as spent once
    // they are stale, and a late settlement from n2 changes nothing.
    assert_eq!(
        a.recover_reservations(
            Recover::StaleExcept {
                node_id: "n1",
                before: 30
            },
            40
        )
        .await
        .unwrap(),
        0,
        "not stale yet"
    );
    assert_eq!(
        a.recover_reservations(
            Recover::StaleExcept {
                node_id: "n1",
                before: 31
            },
            40
        )
        .await
        .unwrap(),
        1
    );
    b.settle_credits(
        "n2",
        &[Settlement {
            tenant_id: t.into(),
            spent: 1,
            requests: 1,
            release: 1,
            ..Settlement::default()
        }],
        41,
    )
    .await
    .unwrap();
    assert_eq!(a.credit_account(t, None, 42).await.unwrap().balance, 2);

    // Never negative: an adjustment below zero is refused.
    assert!(matches!(
        a.change_credits(
            &CreditChange {
                kind: LedgerKind::Adjust,
                ..grant(None, -3, "fp3")
            },
            &audit("credits.adjusted", t, 43)
        )
        .await,
        Err(StoreError::Conflict(_))
    ));

    // Concurrent reservations from two nodes take exactly the balance.
    a.change_credits(&grant(None, 38, "fp4"), &audit("credits.granted", t, 44))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (s, node) = if i % 2 == 0 {
            (a.clone(), "n1")
        } else {
            (b.clone(), "n3")
        };
        let req = reserve(node, 1, 3);
        tasks.push(tokio::spawn(async move {
            (
                i % 2 == 0,
                s.reserve_credits(&req, 45).await.unwrap().granted,
            )
        }));
    }
    let (mut total, mut n1) = (0, 0);
    for task in tasks {
        let (is_n1, granted) = task.await.unwrap();
        total += granted;
        if is_n1 {
            n1 += granted;
        }
    }
    assert_eq!(total, 40);
    assert_eq!(a.credit_account(t, None, 46).await.unwrap().balance, 0);
    // n3 crashes and comes back: its own reservation is counted as spent.
    let n = b
        .recover_reservations(Recover::Node("n3"), 47)
        .await
        .unwrap();
    assert_eq!(n, 1);
    a.settle_credits(
        "n1",
        &[Settlement {
            tenant_id: t.into(),
            spent: n1,
            requests: n1,
            key_id: Some("key_d".into()),
            ..Settlement::default()
        }],
        48,
    )
    .await
    .unwrap();

    // Refills: a tier schedule applies on first sight, then at boundaries;
    // the tenant's own schedule wins over it.
    let monthly_set = Refill {
        amount: 100,
        every: RefillPeriod::Monthly,
        mode: RefillMode::Set,
    };
    let t2 = "ten_refill";
    let now = 1_795_371_590_000; // 2026-11-22T18:19:50Z
    let acc = a.credit_account(t2, Some(monthly_set), now).await.unwrap();
    assert_eq!(acc.balance, 100);
    assert_eq!(acc.next_refill_at, Some(1_796_083_200_000));
    let out = a
        .reserve_credits(
            &ReserveRequest {
                tenant_id: t2.into(),
                node_id: "n1".into(),
                min: 30,
                want: 30,
                refill: Some(monthly_set),
            },
            now + 1,
        )
        .await
        .unwrap();
    assert_eq!(out.balance, 70);
    // Not due yet: nothing changes; due: set back to 100, counting the 30
    // n1 holds (they are spent from the new 100, not on top of it).
    let acc = a
        .credit_account(t2, Some(monthly_set), now + 2)
        .await
        .unwrap();
    assert_eq!((acc.balance, acc.reserved), (70, 30));
    let acc = a
        .credit_account(t2, Some(monthly_set), 1_796_083_200_000)
        .await
        .unwrap();
    assert_eq!((acc.balance, acc.reserved), (70, 30));
    let own = Refill {
        amount: 5,
        every: RefillPeriod::Daily,
        mode: RefillMode::Add,
    };
    a.set_refill(
        t2,
        Some(own),
        1_796_083_200_001,
        &audit("credits.refill_set", t2, 1),
    )
    .await
    .unwrap();
    let acc = a
        .credit_account(t2, Some(monthly_set), 1_796_083_200_002)
        .await
        .unwrap();
    assert_eq!(
        acc.balance + acc.reserved,
        105,
        "the tenant's own add-5 applies at once"
    );
    assert_eq!(acc.refill, Some(own));
    assert_running(a.as_ref(), t2).await;

    // The ledger pages newest first and accounts for every change.
    let page = a
        .list_ledger(
            t,
            PageRequest {
                limit: 3,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    let mut all = page.items.clone();
    let mut next = page.next;
    while let Some(before) = next {
        let p = a
            .list_ledger(
                t,
                PageRequest {
                    limit: 3,
                    before: Some(before),
                },
            )
            .await
            .unwrap();
        all.extend(p.items);
        next = p.next;
    }
    let sum: i64 = all.iter().map(|(_, e)| e.amount).sum();
    assert_eq!(sum, 0, "grants of 10 + 38; spends and recoveries of 48");
    assert_eq!(all, ledger(a.as_ref(), t).await, "newest first");
    assert_running(a.as_ref(), t).await;
    let recovered = all
        .iter()
        .filter(|(_, e)| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.contains("counted as spent"))
        })
        .count();
    assert_eq!(recovered, 2, "n2 (stale) and n3 (its own restart)");
    assert_eq!(
        all.iter()
            .filter(|(_, e)| e.kind == LedgerKind::Grant)
            .count(),
        2
    );
}

/// The whole ledger of `tenant`, newest first (as it pages).
async fn ledger<S: CreditStore>(store: &S, tenant: &str) -> Vec<(i64, LedgerEntry)> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_ledger(tenant, PageRequest { limit: 7, before })
            .await
            .unwrap();
        all.extend(page.items);
        match page.next {
            Some(next) => before = Some(next),
            None => return all,
        }
    }
}

/// The ledger is a running balance: in `seq` order each entry's
/// `balance_after` is the previous one's plus its `amount` (the first
/// one's is its amount: an account starts empty), and the last one's is
/// what the account holds now, stored and reserved.
pub(crate) async fn assert_running<S: CreditStore>(store: &S, tenant: &str) -> Vec<LedgerEntry> {
    let mut entries = ledger(store, tenant).await;
    entries.reverse();
    let mut running = 0;
    for (seq, e) in &entries {
        running += e.amount;
        assert_eq!(
            e.balance_after, running,
            "entry seq {seq} ({:?} {}) of {tenant}: the ledger is not a running balance: {entries:#?}",
            e.kind, e.amount
        );
    }
    let account = store.credit_account(tenant, None, 0).await.unwrap();
    assert_eq!(
        account.balance + account.reserved,
        running,
        "the last balance_after is the stored balance plus every reservation"
    );
    entries.into_iter().map(|(_, e)| e).collect()
}

/// With two nodes (`a` is n1, `b` is n2) reserving, settling, refilling and
/// one counted as stopped, every ledger entry's `balance_after` is the
/// tenant's credits not yet spent (stored + every node's reservation), so
/// the ledger is a running balance whichever node wrote an entry; and a
/// reservation says what the other nodes hold.
pub(super) async fn running_balance<S: CreditStore + AuditStore + 'static>(a: Arc<S>, b: Arc<S>) {
    let t = "ten_running";
    let now = 1_795_371_590_000; // 2026-11-22T18:19:50Z
    let change = |kind: LedgerKind, amount: i64, at: i64| CreditChange {
        id: format!("led_running_{at}"),
        tenant_id: t.into(),
        kind,
        amount,
        at,
        actor: "key_root".into(),
        reason: None,
        idempotency_key: None,
        fingerprint: format!("fp{at}"),
        refill: None,
    };
    let reserve = |node: &str, want: i64| ReserveRequest {
        tenant_id: t.into(),
        node_id: node.into(),
        min: 1,
        want,
        refill: None,
    };
    let settle = |spent: i64, release: i64| Settlement {
        tenant_id: t.into(),
        spent,
        requests: spent,
        release,
        ..Settlement::default()
    };
    let e = a
        .change_credits(
            &change(LedgerKind::Grant, 100, now),
            &audit("credits.granted", t, now),
        )
        .await
        .unwrap();
    assert_eq!(e.entry.balance_after, 100);

    // Reserving moves credits from the stored balance into a node's
    // reservation; each node learns what the others hold.
    let r = a
        .reserve_credits(&reserve("n1", 30), now + 1)
        .await
        .unwrap();
    assert_eq!((r.granted, r.balance, r.held_elsewhere), (30, 70, 0));
    let r = b
        .reserve_credits(&reserve("n2", 20), now + 2)
        .await
        .unwrap();
    assert_eq!((r.granted, r.balance, r.held_elsewhere), (20, 50, 30));
    let r = a.reserve_credits(&reserve("n1", 5), now + 3).await.unwrap();
    assert_eq!((r.granted, r.balance, r.held_elsewhere), (5, 45, 20));
    let acc = b.credit_account(t, None, now + 3).await.unwrap();
    assert_eq!((acc.balance, acc.reserved), (45, 55));

    // Both nodes settle spends (n1 also gives 3 back): each entry counts
    // the other node's reservation too.
    b.settle_credits("n2", &[settle(7, 0)], now + 4)
        .await
        .unwrap();
    a.settle_credits("n1", &[settle(12, 3)], now + 5)
        .await
        .unwrap();
    let r = b.reserve_credits(&reserve("n2", 1), now + 3).await.unwrap();
    assert_eq!((r.granted, r.held_elsewhere), (1, 20), "n1 holds 35 - 15");
    b.settle_credits("n2", &[settle(1, 0)], now + 4)
        .await
        .unwrap();

    // Refills: an `add` on first sight, then a `set` at the next boundary,
    // which counts what the nodes hold (33) as part of the new 50.
    let add = Refill {
        amount: 10,
        every: RefillPeriod::Daily,
        mode: RefillMode::Add,
    };
    let acc = a.credit_account(t, Some(add), now + 6).await.unwrap();
    assert_eq!((acc.balance, acc.reserved), (57, 33));
    let set = Refill {
        amount: 50,
        every: RefillPeriod::Daily,
        mode: RefillMode::Set,
    };
    let boundary = 1_795_392_000_000;
    let acc = b.credit_account(t, Some(set), boundary).await.unwrap();
    assert_eq!((acc.balance, acc.reserved), (17, 33));

    // n2 stops: n1 counts its 13 as spent.
    let n = a
        .recover_reservations(
            Recover::StaleExcept {
                node_id: "n1",
                before: now + 5,
            },
            boundary + 1,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // An operator's adjustment, a last reservation (nobody else holds
    // anything now) and n1's final settlement.
    b.change_credits(
        &change(LedgerKind::Adjust, -7, boundary + 2),
        &audit("credits.adjusted", t, boundary + 2),
    )
    .await
    .unwrap();
    let r = a
        .reserve_credits(&reserve("n1", 4), boundary + 3)
        .await
        .unwrap();
    assert_eq!((r.granted, r.balance, r.held_elsewhere), (4, 6, 0));
    a.settle_credits("n1", &[settle(24, 0)], boundary + 4)
        .await
        .unwrap();

    let entries = assert_running(a.as_ref(), t).await;
    let shape: Vec<(LedgerKind, i64, i64)> = entries
        .iter()
        .map(|e| (e.kind, e.amount, e.balance_after))
        .collect();
    assert_eq!(
        shape,
        [
            (LedgerKind::Grant, 100, 100),
            (LedgerKind::Spend, -7, 93),
            (LedgerKind::Spend, -12, 81),
            (LedgerKind::Spend, -1, 80),
            (LedgerKind::Refill, 10, 90),
            (LedgerKind::Refill, -40, 50),
            (LedgerKind::Spend, -13, 37),
            (LedgerKind::Adjust, -7, 30),
            (LedgerKind::Spend, -24, 6),
        ]
    );
    let acc = a.credit_account(t, None, boundary + 5).await.unwrap();
    assert_eq!((acc.balance, acc.reserved), (6, 0));

    // Under concurrency, on both handles at once: reservations, settlements
    // of spends and releases, and grants; the ledger stays a running balance.
    let mut tasks = Vec::new();
    for i in 0..6_i64 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let node = format!("c{i}");
            let at = boundary + 10 + i;
            for round in 0..15_i64 {
                if i == 0 {
                    let c = CreditChange {
                        id: format!("led_running_c{round}"),
                        tenant_id: "ten_running".into(),
                        kind: LedgerKind::Grant,
                        amount: 10,
                        at,
                        actor: "key_root".into(),
                        reason: None,
                        idempotency_key: None,
                        fingerprint: format!("fpc{round}"),
                        refill: None,
                    };
                    s.change_credits(&c, &audit("credits.granted", "ten_running", at + round))
                        .await
                        .unwrap();
                    continue;
                }
                let got = s
                    .reserve_credits(
                        &ReserveRequest {
                            tenant_id: "ten_running".into(),
                            node_id: node.clone(),
                            min: 1,
                            want: 1 + (round + i) % 4,
                            refill: None,
                        },
                        at,
                    )
                    .await
                    .unwrap()
                    .granted;
                if got > 0 {
                    let spent = got / 2 + round % 2 * (got % 2);
                    s.settle_credits(
                        &node,
                        &[Settlement {
                            tenant_id: "ten_running".into(),
                            spent,
                            requests: spent,
                            release: got - spent,
                            ..Settlement::default()
                        }],
                        at,
                    )
                    .await
                    .unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let entries = assert_running(a.as_ref(), t).await;
    assert!(entries.len() > 20, "{}", entries.len());
    let acc = a.credit_account(t, None, boundary + 100).await.unwrap();
    assert_eq!(acc.reserved, 0, "every reservation was settled or released");
}
