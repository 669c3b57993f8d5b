//! Money coming into registered wallets on anvil is booked with its sender and the wallet's
//! balance before and after: ether sent directly, tokens by `Transfer` log, ether from a
//! contract's internal call (traces). One from an address outside the wallet's `refill_from`
//! raises `unexpected_inflow` — an alert, never a freeze. Status and reports show them.

use spendguard_config::AlertKind;
use spendguard_core::EventKind;
use spendguard_evm::testing;
use spendguard_service::AlertChannel;
use spendguard_store::{OutboxStore, OutflowStore};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refills_are_booked_and_strangers_money_is_reported_not_frozen() {
    let org = EvmOrg::start("").await;
    let treasury = testing::address_of(DEV_KEYS[0]).unwrap();
    let stranger = testing::address_of(DEV_KEYS[5]).unwrap();
    let config = org.variant(
        "refills",
        &[(
            "password_env = \"HOT_PASSWORD\"",
            &format!("password_env = \"HOT_PASSWORD\"\nrefill_from = [\"{treasury}\"]"),
        )],
    );
    let (url, seen) = spendguard_tests::alert_receiver::receiver(0).await;
    let hook = AlertChannel {
        id: "treasury".into(),
        kind: AlertKind::Webhook,
        url: Some(format!("{url}/hook")),
        events: vec![EventKind::UnexpectedInflow],
    };
    let node = org.node_for(config, vec![hook]).await;
    node.tick().await;

    // A refill from the treasury: booked with the balances around it, nothing reported.
    let refill = testing::send_native(&org.anvil.url, DEV_KEYS[0], HOT, 5 * 10u128.pow(18)).await.unwrap();
    // Ether from someone else.
    let gift = testing::send_native(&org.anvil.url, DEV_KEYS[5], HOT, 10u128.pow(18)).await.unwrap();
    org.mine().await;
    node.tick().await;
    let inflows = node.ledger().inflows(Some("eth-local")).await.unwrap();
    let booked = inflows.iter().find(|i| i.tx_hash == refill).expect("the refill is booked");
    assert!(booked.expected && booked.sender == treasury && booked.wallet == "hot", "{booked:?}");
    assert_eq!(booked.amount, "5".parse().unwrap());
    let (b, a) = (booked.balance_before.unwrap(), booked.balance_after.unwrap());
    assert_eq!(a - b, "5".parse().unwrap(), "balance before and after the refill: {booked:?}");
    let strange = inflows.iter().find(|i| i.tx_hash == gift).expect("the stranger's ether is booked");
    assert!(!strange.expected && strange.sender == stranger, "{strange:?}");

    // TUSD funding at the start came from the treasury into hot (expected) and cold (which
    // expects no one): cold's is reported.
    let tusd: Vec<_> = inflows.iter().filter(|i| i.asset.as_deref() == Some("eth-local:TUSD")).collect();
    assert!(tusd.iter().any(|i| i.wallet == "hot" && i.expected), "{tusd:?}");
    assert!(tusd.iter().any(|i| i.wallet == "cold" && !i.expected), "{tusd:?}");

    let events = node.ledger().events(Some(EventKind::UnexpectedInflow)).await.unwrap();
    let into_hot: Vec<&str> =
        events.iter().map(|e| e.detail.as_str()).filter(|d| d.contains("came into wallet hot")).collect();
    assert_eq!(into_hot.len(), 1, "only the stranger's money into hot is reported: {events:?}");
    assert!(into_hot[0].starts_with(&format!("1 eth-local:ETH came into wallet hot from {stranger}")), "{events:?}");
    assert!(into_hot[0].contains("(balance 10005 → 10006)"), "{events:?}");
    let delivered = seen.lock().unwrap().clone();
    assert!(delivered.iter().any(|(_, body)| body["event"] == "unexpected_inflow"), "{delivered:?}");
    assert!(node.services.operators.frozen().await.unwrap().is_empty(), "an inflow never freezes");

    let status = node.services.overview.status().await.unwrap();
    let hot = status.wallets.iter().find(|w| w.wallet == "hot").unwrap();
    assert_eq!(hot.recent_inflows.last().map(|i| i.tx_hash.as_str()), Some(gift.as_str()), "{hot:?}");
    let now = chrono::Utc::now();
    let report = node
        .services
        .reports
        .report(now - chrono::TimeDelta::hours(1), now + chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    let md = spendguard_service::report::render(&report, spendguard_service::report::ReportFormat::Markdown);
    assert!(md.contains("## Inflows") && md.contains(&format!("from {stranger}, balance")), "{md}");
    assert!(md.contains("UNEXPECTED (sender not in refill_from)"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solana_refills_are_booked_with_their_balances_and_a_strangers_sol_and_tokens_are_reported() {
    use spendguard_tests::solana_org::SolanaOrg;
    let org = SolanaOrg::start("").await;
    let treasury = spendguard_solana::keypair_address(&org.treasury);
    let refills =
        format!("keypair = \"{}\"\nrefill_from = [\"{treasury}\"]", org.evm.dir.path().join("sol-hot.json").display());
    let keypair_line = format!("keypair = \"{}\"", org.evm.dir.path().join("sol-hot.json").display());
    let config = org.variant("sol-refills", &[(&keypair_line, &refills)]);
    let node = org.evm.node_for(config, vec![]).await;
    let stranger = spendguard_solana::Keypair::new();
    let stranger_address = spendguard_solana::keypair_address(&stranger);
    spendguard_solana::testing::send_sol(&org.surfnet.url, &org.treasury, &stranger_address, 500_000_000)
        .await
        .unwrap();
    let refill = spendguard_solana::testing::send_sol(&org.surfnet.url, &org.treasury, &org.address, 1_000_000_000)
        .await
        .unwrap();
    let gift =
        spendguard_solana::testing::send_sol(&org.surfnet.url, &stranger, &org.address, 100_000_000).await.unwrap();
    // Tokens into sol-hot's existing token account: the transaction does not name sol-hot itself,
    // only its token account, whose history the watcher lists too.
    spendguard_solana::testing::mint_to(&org.surfnet.url, &org.treasury, &org.usds, &stranger_address, 2_000_000)
        .await
        .unwrap();
    let tokens =
        spendguard_solana::testing::send_token(&org.surfnet.url, &stranger, &org.usds, &org.address, 2_000_000)
            .await
            .unwrap();
    let mut inflows = vec![];
    spendguard_tests::wait_until(
        "the SOL and USDS inflows to be booked",
        std::time::Duration::from_secs(30),
        async || {
            node.tick().await;
            inflows = node.ledger().inflows(Some("sol-local")).await.unwrap();
            [&refill, &gift, &tokens].iter().all(|s| inflows.iter().any(|i| &&i.tx_hash == s))
        },
    )
    .await;
    let usds = inflows.iter().find(|i| i.tx_hash == tokens).unwrap();
    assert_eq!(
        (usds.asset.as_deref(), usds.sender.as_str()),
        (Some("sol-local:USDS"), stranger_address.as_str()),
        "{usds:?}"
    );
    assert_eq!(
        (usds.amount, usds.balance_after.unwrap() - usds.balance_before.unwrap()),
        ("2".parse().unwrap(), "2".parse().unwrap())
    );
    let booked = inflows.iter().find(|i| i.tx_hash == refill).unwrap();
    assert!(booked.expected && booked.sender == treasury && booked.wallet == "sol-hot", "{booked:?}");
    assert_eq!(booked.amount, "1".parse().unwrap());
    assert_eq!(booked.balance_after.unwrap() - booked.balance_before.unwrap(), "1".parse().unwrap(), "{booked:?}");
    let strange = inflows.iter().find(|i| i.tx_hash == gift).unwrap();
    assert!(!strange.expected && strange.sender == stranger_address, "{strange:?}");
    let events = node.ledger().events(Some(EventKind::UnexpectedInflow)).await.unwrap();
    assert!(
        events.iter().any(|e| e
            .detail
            .starts_with(&format!("0.1 sol-local:SOL came into wallet sol-hot from {stranger_address}"))),
        "{events:?}"
    );
    assert!(node.services.operators.frozen().await.unwrap().is_empty(), "an inflow never freezes");
}
