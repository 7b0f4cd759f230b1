//! The docs page: Swagger UI over the whole API's OpenAPI document or any one
//! version's, with a menu to switch (`/docs?version=v1` opens on v1).
//!
//! The page itself is small; Swagger UI's stylesheet and script (about
//! 1.5 MB, taken from poem-openapi's own page) are served beside it, made
//! on the first request for them, and kept a day by the browser.

use bytes::Bytes;
use poem::{Endpoint, Route};

use crate::openapi::Documents;
use crate::routes::cached::{self, Freshness};

/// The page at `/docs`, its assets under `/docs/`.
pub fn page(documents: &Documents) -> impl Endpoint {
    let html = PAGE
        .replace("{title}", env!("CARGO_PKG_NAME"))
        .replace("{options}", &options(documents));
    Route::new()
        .at(
            "/",
            poem::get(cached::fixed(
                html,
                "text/html; charset=utf-8",
                Freshness::Revalidate,
            )),
        )
        .at(
            "/swagger-ui.css",
            poem::get(cached::lazy(
                || swagger_ui_part("<style charset=\"UTF-8\">", "</style>"),
                "text/css; charset=utf-8",
                Freshness::OneDay,
            )),
        )
        .at(
            "/swagger-ui.js",
            poem::get(cached::lazy(
                || swagger_ui_part("<script charset=\"UTF-8\">", "</script>"),
                "text/javascript; charset=utf-8",
                Freshness::OneDay,
            )),
        )
}

/// The menu's entries: the whole API, then each version.
fn options(documents: &Documents) -> String {
    let mut options = String::from("<option value=\"/openapi.json\">whole API</option>");
    for (version, _) in documents.versions() {
        let label = if documents.policy().is_deprecated(version) {
            [version, " (deprecated)"].concat()
        } else {
            version.to_owned()
        };
        options.push_str(
            &[
                "<option value=\"/",
                version,
                "/openapi.json\" data-version=\"",
                version,
                "\">",
                &label,
                "</option>",
            ]
            .concat(),
        );
    }
    options
}

/// The text between `start` and `end` in poem-openapi's Swagger UI page
/// (the code as built: a unit test below fails should a new poem-openapi
/// move them).
fn swagger_ui_part(start: &str, end: &str) -> Option<Bytes> {
    let page = crate::routes::api().swagger_ui_html();
    between(&page, start, end).map(|part| Bytes::copy_from_slice(part.as_bytes()))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    Some(&text[from..to])
}

// The placeholders are replaced once, at start.
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<style>
  .versions { font-family: sans-serif; padding: 12px 20px; background: #1b1b1b; color: #fff; }
  .versions select { margin-left: 8px; font-size: 14px; }
</style>
<script src="/docs/swagger-ui.js"></script>
</head>
<body>
<header class="versions">
  <label for="version">API version</label>
  <select id="version">{options}</select>
</header>
<div id="ui"></div>
<script>
  const select = document.getElementById("version");
  const wanted = new URLSearchParams(location.search).get("version");
  for (const option of select.options) {
    if (option.dataset.version && option.dataset.version === wanted) select.value = option.value;
  }
  const show = () => SwaggerUIBundle({ dom_id: "#ui", url: select.value, deepLinking: true });
  select.addEventListener("change", () => {
    const url = new URL(location.href);
    const version = select.selectedOptions[0].dataset.version;
    if (version) url.searchParams.set("version", version); else url.searchParams.delete("version");
    history.replaceState(null, "", url);
    show();
  });
  show();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poem_openapis_page_still_has_the_parts_this_page_serves() {
        let style = swagger_ui_part("<style charset=\"UTF-8\">", "</style>").expect("stylesheet");
        let script = swagger_ui_part("<script charset=\"UTF-8\">", "</script>").expect("script");
        assert!(std::str::from_utf8(&style).unwrap().contains(".swagger-ui"));
        let script = std::str::from_utf8(&script).unwrap();
        assert!(script.contains("SwaggerUIBundle"));
        // Swagger UI's code, not the inline copy of the document.
        assert!(!script.contains("let spec ="));
    }

    #[test]
    fn the_menu_lists_the_whole_api_then_each_version() {
        let documents = crate::routes::documents().unwrap();
        let options = options(&documents);
        assert!(options.starts_with("<option value=\"/openapi.json\">whole API</option>"));
        assert!(
            options.contains("<option value=\"/v1/openapi.json\" data-version=\"v1\">v1</option>")
        );
    }
}
