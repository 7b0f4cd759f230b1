//! The docs page: Swagger UI over the whole API's OpenAPI document or any one
//! version's, with a menu to switch (`/docs?version=v1` opens on v1).

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, Route};

use crate::openapi::Documents;

/// `swagger_ui` is poem-openapi's page, whose stylesheet and script this
/// page reuses; should they ever not be found in it, that page is served as
/// it is (the whole API, no menu).
pub fn page(swagger_ui: &str, documents: &Documents) -> impl Endpoint {
    let html = switchable(swagger_ui, documents).unwrap_or_else(|| swagger_ui.to_owned());
    Route::new().at("/", poem::get(make_sync(move |_| Html(html.clone()))))
}

fn switchable(swagger_ui: &str, documents: &Documents) -> Option<String> {
    let style = between(swagger_ui, "<style charset=\"UTF-8\">", "</style>")?;
    let script = between(swagger_ui, "<script charset=\"UTF-8\">", "</script>")?;
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
    Some(
        PAGE.replace("{title}", env!("CARGO_PKG_NAME"))
            .replace("{options}", &options)
            .replace("{style}", style)
            .replace("{script}", script),
    )
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    Some(&text[from..to])
}

// The placeholders are replaced once, at start; `{script}` last, so that
// nothing in Swagger UI's own code is taken for one.
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} API docs</title>
<style>{style}</style>
<style>
  .versions { font-family: sans-serif; padding: 12px 20px; background: #1b1b1b; color: #fff; }
  .versions select { margin-left: 8px; font-size: 14px; }
</style>
<script>{script}</script>
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
    fn poem_openapis_page_still_has_the_parts_this_page_reuses() {
        let documents = crate::routes::documents().unwrap();
        let swagger_ui = crate::routes::api().swagger_ui_html();
        let page = switchable(&swagger_ui, &documents).expect("stylesheet and script found");
        assert!(page.contains("SwaggerUIBundle({ dom_id"));
        assert!(page.contains("<option value=\"/v1/openapi.json\" data-version=\"v1\">v1</option>"));
        // Swagger UI's code, not the inline copy of the document.
        assert!(!page.contains("let spec ="));
    }
}
