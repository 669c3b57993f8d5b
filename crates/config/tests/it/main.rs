//! Configuration tests against the files in fixtures/config.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use spendguard_config::{load, parse, ConfigError};
use spendguard_core::model::{Measure, RecipientAction, Scope};
use std::path::{Path, PathBuf};

pub(crate) fn fixtures() -> PathBuf {
    // At run time: a test binary built in a shared target dir by another checkout keeps that
    // checkout's path in env!.
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../fixtures/config")
}

#[test]
fn the_spec_example_loads_with_every_key_understood() {
    let config = load(&fixtures().join("example.toml")).expect("example must be valid");
    let m = &config.model;
    assert_eq!(m.org_id, "acme-corp");
    assert_eq!((m.chains.len(), m.assets.len(), m.wallets.len(), m.agents.len()), (2, 4, 2, 2));
    assert_eq!(m.merchants.len(), 2);
    assert_eq!(m.policies.len(), 5);
    let procurement = m.policies.iter().find(|p| p.id == "procurement").unwrap();
    assert_eq!(procurement.scope, Scope::Agent("procurement-bot".into()));
    assert_eq!(procurement.limits.len(), 3);
    assert!(matches!(procurement.limits[1].measure, Measure::Count(5)));
    assert_eq!(procurement.limits[2].asset.as_deref(), Some("eth-local:ETH"));
    assert_eq!(procurement.timezone.name(), "America/New_York", "calendar windows follow the schedule's timezone");
    let recipients = procurement.recipients.as_ref().unwrap();
    assert_eq!(recipients.default_action, RecipientAction::Block);
    assert_eq!(recipients.rules.len(), 3);
    let refunds = m.policies.iter().find(|p| p.id == "refunds").unwrap();
    assert_eq!(refunds.operations.len(), 2);
    let fraction = &m.policies.iter().find(|p| p.id == "trading-hot-wallet").unwrap().limits[0];
    assert!(matches!(fraction.measure, Measure::BalanceFraction(_)));
    // EVM addresses are canonicalised; the merchant registry is keyed by chain and address.
    assert!(m.merchant_at("eth-local", "0x70997970c51812dc3a010c7d01b50e0d17dc79c8").is_some());
    assert_eq!(config.server.database, spendguard_config::Database::Sqlite(fixtures().join("spendguard.db")));
    assert_eq!(config.chains[0].confirmations, 2);
    assert_eq!(config.reports[0].formats, ["json", "csv", "html"]);
    assert_eq!(config.alerts[0].events.len(), 7);
    assert!(config.summary().contains("procurement on agent:procurement-bot"));
}

#[test]
fn the_minimal_fixture_loads() {
    load(&fixtures().join("minimal.toml")).expect("minimal must be valid");
}

/// Each file in fixtures/config/broken must fail with exactly the text of its `.err` file.
/// `SPENDGUARD_BLESS=1` rewrites the `.err` files (review the diff before committing).
#[test]
fn each_broken_config_fails_with_its_exact_error() {
    let dir = fixtures().join("broken");
    let bless = std::env::var_os("SPENDGUARD_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "expected the broken fixtures, found {}", files.len());
    let mut failures = vec![];
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let err = match parse(&text, Path::new(&name)) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without error"));
                continue;
            }
            Err(e) => e,
        };
        assert!(matches!(err, ConfigError::Invalid { .. }));
        let got = format!("{err}\n");
        let expected_path = file.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected =
            std::fs::read_to_string(&expected_path).unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if got != expected {
            failures.push(format!("{name}:\n  expected: {expected}  got:      {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unreadable_file_names_the_path() {
    let err = load(Path::new("/nonexistent/spendguard.toml")).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/spendguard.toml: cannot read the configuration"), "{err}");
}

#[test]
fn every_issue_is_reported_not_just_the_first() {
    let text = std::fs::read_to_string(fixtures().join("minimal.toml"))
        .unwrap()
        .replace("wallets = [\"hot\"]", "wallets = [\"cold\"]")
        .replace("scope = \"agent:bot\"", "scope = \"agent:robot\"");
    let err = parse(&text, Path::new("two.toml")).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn admin_roles_default_to_admin_and_can_be_set_per_action() {
    use spendguard_config::AdminAction;
    let config = load(&fixtures().join("example.toml")).unwrap();
    assert_eq!(config.roles.for_action(AdminAction::Freeze), ["admin"]);
    assert_eq!(config.roles.for_action(AdminAction::UnfreezeReconciler), ["admin"]);
    assert_eq!(config.roles.for_action(AdminAction::View), ["admin", "approver", "viewer"]);
    let base = std::fs::read_to_string(fixtures().join("example.toml")).unwrap();
    let set = format!("{base}\n[roles]\nunfreeze_reconciler = [\"admin\"]\ncancel_delay = [\"approver\", \"admin\"]\n");
    let config = parse(&set, Path::new("roles.toml")).unwrap();
    assert_eq!(config.roles.for_action(AdminAction::CancelDelay), ["approver", "admin"]);
    // A role nobody holds would leave the action to nobody; an unknown action is a typo.
    let unheld = format!("{base}\n[roles]\nunfreeze_reconciler = [\"security\"]\n");
    let err = parse(&unheld, Path::new("roles.toml")).unwrap_err().to_string();
    assert!(err.contains("roles.unfreeze_reconciler[0]: no operator holds role \"security\""), "{err}");
    let typo = format!("{base}\n[roles]\nunfreze = [\"admin\"]\n");
    let err = parse(&typo, Path::new("roles.toml")).unwrap_err().to_string();
    assert!(err.contains("unknown field `unfreze`"), "{err}");
    let empty = format!("{base}\n[roles]\nfreeze = []\n");
    let err = parse(&empty, Path::new("roles.toml")).unwrap_err().to_string();
    assert!(err.contains("roles.freeze: must name at least one role"), "{err}");
}

#[test]
fn agents_no_limit_covers_are_warned_about() {
    let config = load(&fixtures().join("example.toml")).unwrap();
    assert!(config.warnings().is_empty(), "the example bounds everyone: {:?}", config.warnings());
    let base = std::fs::read_to_string(fixtures().join("minimal.toml")).unwrap();
    let stray =
        parse(&format!("{base}\n[[agent]]\nid = \"stray\"\nwallets = [\"hot\"]\n"), Path::new("m.toml")).unwrap();
    let warnings = stray.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("agent stray spending from wallet hot: no policy with a limit"), "{warnings:?}");
}

mod fuzz;

#[test]
fn live_price_tables_load_with_their_defaults() {
    use spendguard_core::price::{FeedKind, PriceSource};
    let base = std::fs::read_to_string(fixtures().join("minimal.toml")).unwrap();
    let text = base
        .replace(
            "price_usd = \"3000\"",
            "price = { source = \"chainlink\", feed = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\", max_age = \"1h\", \
             sequencer_feed = \"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512\" }",
        )
        .replace(
            "price_usd = \"1\"",
            "price = { source = \"chainlink\", feed = \"0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0\", max_age = \"25h\", \
             peg_usd = \"1\", max_peg_deviation = \"2%\", refresh = \"30s\" }",
        );
    let config = parse(&text, Path::new("live.toml")).unwrap();
    let eth = &config.model.assets[0].price;
    let PriceSource::Live(feed) = &eth.source else { panic!("{eth:?}") };
    assert_eq!(feed.chain, "eth-local");
    assert_eq!(feed.max_age, chrono::TimeDelta::hours(1));
    assert_eq!(eth.refresh, chrono::TimeDelta::seconds(10));
    let FeedKind::Chainlink { sequencer: Some((_, grace)), .. } = &feed.kind else { panic!("{feed:?}") };
    assert_eq!(*grace, chrono::TimeDelta::hours(1), "Chainlink's documented grace by default");
    let usdc = &config.model.assets[1].price;
    let peg = usdc.peg.unwrap();
    assert_eq!((peg.usd, peg.max_deviation), (1.into(), "0.02".parse().unwrap()));
    assert_eq!(usdc.source.name(), "chainlink:0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0", "canonical: lower case");
}

#[test]
fn delegates_are_evm_addresses_of_evm_wallets() {
    let base = std::fs::read_to_string(fixtures().join("minimal.toml")).unwrap();
    let with = |list: &str| base.replace("id = \"hot\"\n", &format!("id = \"hot\"\ndelegates = {list}\n"));
    let config = parse(&with("[\"0x5FbDB2315678afecb367f032d93F642f64180aa3\"]"), Path::new("d.toml")).unwrap();
    assert_eq!(config.model.wallets[0].delegates, ["0x5fbdb2315678afecb367f032d93f642f64180aa3"]);
    let err = parse(&with("[\"0x5fbdb2315678afecb367f032d93f642f64180aA3\"]"), Path::new("d.toml")).unwrap_err();
    assert!(
        err.to_string()
            .contains("wallet[0].delegates[0]: \"0x5fbdb2315678afecb367f032d93f642f64180aA3\" has a bad EIP-55"),
        "{err}"
    );
}

#[test]
fn balance_conservation_is_on_unless_a_chain_turns_it_off() {
    let base = std::fs::read_to_string(fixtures().join("minimal.toml")).unwrap();
    assert!(parse(&base, Path::new("on.toml")).unwrap().chains[0].balance_conservation);
    let off = base.replace("chain_id = 31337\n", "chain_id = 31337\nbalance_conservation = false\n");
    assert!(!parse(&off, Path::new("off.toml")).unwrap().chains[0].balance_conservation);
}
