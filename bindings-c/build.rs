//! Gives libpsremote.so its SONAME, the ABI series of the version (see `abi_series`), so that a
//! program linked against it records `NEEDED libpsremote.so.<series>` and keeps loading the
//! library across compatible updates. Writes nothing into the source tree.

use std::env;

/// The part of the version that names an ABI: the major version from 1.0 on; before 1.0 (where
/// semver lets any minor release break compatibility) `0.<minor>`, as cargo-c and libtool-style
/// `-release` numbering do. `psremote.h` (`PSR_VERSION_*`), the README and the CMake package's
/// version file follow the same rule.
fn abi_series(major: &str, minor: &str) -> String {
    if major == "0" { format!("0.{minor}") } else { major.to_owned() }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets CARGO_PKG_VERSION_MINOR");
    let series = abi_series(&major, &minor);
    // SONAMEs are an ELF notion; macOS (install_name) and Windows (import libraries) differ.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    if family == "unix" && !matches!(os.as_str(), "macos" | "ios" | "tvos" | "watchos" | "visionos") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpsremote.so.{series}");
    }
}
