//! Rebuilds when a migration file is added: refinery embeds the files it
//! finds, and by itself cargo only notices edits to files it already read.
//! Links the binary with packed relative relocations on glibc.

fn main() {
    pack_relative_relocations();
    println!("cargo:rerun-if-changed=migrations");
    // Each feature module's own, under src/modules/*/migrations. A change
    // anywhere under src/modules reruns this, which is cheap; a service with
    // no module yet has no such folder, and naming a missing path would
    // rebuild the crate every time.
    if std::path::Path::new("src/modules").is_dir() {
        println!("cargo:rerun-if-changed=src/modules");
    }
}

/// The binary is position-independent, so each of its pointers to itself is
/// relocated as it starts: 675 KiB of `.rela.dyn` entries, read by every
/// process and kept mapped for its lifetime. Packed (`DT_RELR`), they take
/// 12 KiB, and the master and two workers just started hold about 3 MiB less
/// (docs/benchmarks.md, round five). Only the binary's link changes, so no
/// dependency is rebuilt.
///
/// The linker (rust-lld, or GNU ld 2.38 on) then records a need for glibc's
/// `GLIBC_ABI_DT_RELR`, which glibc has from 2.36 (Debian 12, where the
/// images build and run): an older glibc refuses to start such a binary. So
/// it is done only for a native build on a glibc that has it, and not on,
/// say, Ubuntu 22.04's 2.35; a cross build is left as it is.
fn pack_relative_relocations() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if linux_gnu && var("TARGET") == var("HOST") && host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc is `major.minor` or later, as `getconf`
/// (glibc's own) says; false when it cannot say.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().strip_prefix("glibc ").unwrap_or_default();
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(found_major), Some(found_minor)) => (found_major, found_minor) >= (major, minor),
        _ => false,
    }
}
