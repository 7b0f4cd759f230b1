#!/usr/bin/env bash
# Adds an API version (make version NEW=v3): api/src/routes/v3/ with a hello
# to start from, registered in api/src/routes/mod.rs beside the others, and
# its OpenAPI document written to openapi/. See docs/versioning.md.
set -euo pipefail
cd "$(dirname "$0")/.."

new=${1:-}
if ! [[ "$new" =~ ^v[1-9][0-9]*$ ]]; then
    echo "usage: make version NEW=v3 (v and a number)" >&2
    exit 2
fi
routes=api/src/routes
latest=$(for dir in "$routes"/v[0-9]*/; do [ -d "$dir" ] && basename "$dir" | tr -d v; done | sort -n | tail -n 1)
if [ -z "$latest" ]; then
    echo "version: no api/src/routes/vN/ to follow" >&2
    exit 1
fi
latest=v$latest
if [ "${new#v}" -le "${latest#v}" ]; then
    echo "version: $new must be newer than $latest, the latest" >&2
    exit 2
fi

# The new version's module: a hello, for clients and probes to find it by.
mkdir "$routes/$new"
sed -e "s/__VERSION__/$new/g" -e "s/__TAG__/V${new#v}/g" -e "s/__LATEST__/$latest/g" \
    >"$routes/$new/mod.rs" <<'RUST'
//! Version __VERSION__: say here what changed since __LATEST__, and why.

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;

#[derive(Debug, Object)]
#[oai(rename = "Hello__TAG__")]
pub struct Hello {
    /// Always `__VERSION__`.
    pub version: String,
    pub message: String,
}

pub struct Api;

#[OpenApi(prefix_path = "/__VERSION__", tag = "ApiTags::__TAG__")]
impl Api {
    /// Hello, __VERSION__
    #[oai(path = "/hello", method = "get")]
    async fn hello(&self) -> Json<Hello> {
        Json(Hello {
            version: "__VERSION__".into(),
            message: "Hello, world!".into(),
        })
    }
}
RUST

# Registered right after the latest version: its module, its tag, and its
# place in the API.
mod_rs=$routes/mod.rs
cp "$mod_rs" "$mod_rs.before-$new"
latest_tag=V${latest#v}
perl -0pi -e "s/^pub mod $latest;\n/pub mod $latest;\npub mod $new;\n/m" "$mod_rs"
perl -0pi -e "s/^(\s+)$latest_tag,\n/\$1$latest_tag,\n\$1\/\/\/ Version ${new#v} of the API.\n\$1V${new#v},\n/m" "$mod_rs"
perl -0pi -e "s/\b$latest::Api,/$latest::Api, $new::Api,/" "$mod_rs"
for expected in "pub mod $new;" "V${new#v}," "$new::Api,"; do
    if ! grep -qF "$expected" "$mod_rs"; then
        mv "$mod_rs.before-$new" "$mod_rs"
        rm -r "${routes:?}/$new"
        echo "version: could not register $new in $mod_rs (no '$expected' after editing); add it by hand" >&2
        exit 1
    fi
done
rm "$mod_rs.before-$new"

cargo fmt --all
package=$(scripts/package-name.sh)
cargo run --quiet --bin "$package" -- openapi write
echo
echo "added $new: edit $routes/$new/mod.rs, run make openapi after each API change, and commit openapi/ with the code."
