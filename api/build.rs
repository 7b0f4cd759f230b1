//! Rebuilds when a migration file is added: refinery embeds the files it
//! finds, and by itself cargo only notices edits to files it already read.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // Each feature module's own, under src/modules/*/migrations. A change
    // anywhere under src/modules reruns this, which is cheap; a service with
    // no module yet has no such folder, and naming a missing path would
    // rebuild the crate every time.
    if std::path::Path::new("src/modules").is_dir() {
        println!("cargo:rerun-if-changed=src/modules");
    }
}
