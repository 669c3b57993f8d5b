//! Crash-test fail points: with the `fail-points` feature (tests only),
//! `SPENDGUARD_FAILPOINT=after_sign` (or `after_broadcast`) makes the process exit at that
//! point, the way a crash would. Release builds do not have them.

/// Exits the process with `code` when the fail point `name` is armed.
#[cfg(feature = "fail-points")]
pub(crate) fn hit(name: &str, code: i32) {
    if std::env::var("SPENDGUARD_FAILPOINT").is_ok_and(|v| v == name) {
        std::process::exit(code);
    }
}

/// Fail points are compiled out without the `fail-points` feature.
#[cfg(not(feature = "fail-points"))]
#[inline(always)]
pub(crate) fn hit(_name: &str, _code: i32) {}

#[cfg(all(test, not(feature = "fail-points")))]
mod tests {
    /// A build without the feature (release, the demo, this crate's own tests) has no crash
    /// points: arming one does nothing. (With the feature, `hit` would end this process.)
    #[test]
    fn without_the_feature_an_armed_fail_point_does_nothing() {
        const { assert!(!crate::FAIL_POINTS) };
        std::env::set_var("SPENDGUARD_FAILPOINT", "after_sign");
        super::hit("after_sign", 86);
        std::env::remove_var("SPENDGUARD_FAILPOINT");
    }
}
