//! `spendguard check` catches what would only fail at `serve`: key files missing, unreadable,
//! or holding another wallet's key.

use crate::operators::{cli, err, out};
use spendguard_tests::evm_org::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_missing_and_foreign_key_files() {
    let org = EvmOrg::start("").await;
    let o = cli(&org.config_path, &["check"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    // Not set in this shell: a warning, since the daemon's environment may differ.
    assert!(out(&o).contains("warning: wallet hot: HOT_PASSWORD (the keystore's password) is not set"), "{}", out(&o));

    let hot = org.dir.path().join("hot.json");
    let missing = org.variant("missing", &[(&hot.display().to_string(), "/nonexistent/hot.json")]);
    let o = cli(&missing.path, &["check"]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("error: wallet hot: keystore /nonexistent/hot.json"), "{}", out(&o));

    let cold = org.dir.path().join("cold.json");
    let swapped = org.variant("swapped", &[(&hot.display().to_string(), &cold.display().to_string())]);
    let o = cli(&swapped.path, &["check"]);
    assert!(!o.status.success(), "{}", out(&o));
    let expected = format!("error: wallet hot: the keystore {} holds the key of {COLD}, not {HOT}", cold.display());
    assert!(out(&o).contains(&expected), "{}", out(&o));
}
