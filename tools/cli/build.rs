//! Bakes the fingerprint of the sources into the binary (`spendguard build-info`), so the
//! end-to-end tests can refuse a stale binary.

include!("fingerprint.rs");

fn main() {
    let manifest = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.join("../..");
    for root in SOURCE_ROOTS {
        println!("cargo:rerun-if-changed={}", workspace.join(root).display());
    }
    println!("cargo:rerun-if-changed=fingerprint.rs");
    println!("cargo:rustc-env=SPENDGUARD_SOURCES={}", source_fingerprint(&workspace));
}
