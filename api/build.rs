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
/// dependency is rebuilt. It needs GNU ld 2.38 and glibc 2.36 (Debian 12,
/// where the images build and run): the linker records a need for
/// `GLIBC_ABI_DT_RELR`, so an older glibc refuses to start the binary by
/// that name rather than misread it. Other C libraries are left as they are.
fn pack_relative_relocations() {
    let on =
        |variable: &str, value: &str| std::env::var(variable).is_ok_and(|found| found == value);
    if on("CARGO_CFG_TARGET_OS", "linux") && on("CARGO_CFG_TARGET_ENV", "gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
