//! Sign-in on the docs page, in a real browser through nginx (the harness
//! is the core's, `crate::docs_page`): "Authorize" with a token from
//! `/login`, then "Try it out" on `GET /getName` and `POST /setName`.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{json, Value};

use crate::auth::helpers::SignIn;
use crate::docs_page::{bounded, document, operations_of, Browser, WAIT_LIMIT};
use crate::proxy::spawn_behind_nginx;

/// The block of the operation `method` `path`, expanded, in "Try it out"
/// mode: a CSS selector for what is inside it.
async fn try_out(browser: &Browser, method: &str, path: &str) -> String {
    let block = format!(".opblock.opblock-{method}:has(.opblock-summary [data-path=\"{path}\"])");
    browser
        .element(&format!("{block} .opblock-summary"))
        .await
        .click()
        .await
        .unwrap();
    browser
        .element(&format!("{block} .try-out__btn"))
        .await
        .click()
        .await
        .unwrap();
    browser.element(&format!("{block} .execute")).await;
    block
}

/// Clicks "Execute" in `block` and waits for the answer Swagger UI shows:
/// (status, body, headers as shown).
async fn execute(browser: &Browser, state: &str, block: &str) -> (u16, String, String) {
    browser
        .element(&format!("{block} .execute"))
        .await
        .click()
        .await
        .unwrap();
    // Swagger UI's "Server response": the code, then each part under a
    // heading of its own.
    let script = format!(
        r#"const table = document.querySelector('{block} .live-responses-table');
        const status = table?.querySelector('.response .response-col_status');
        const part = (name) => {{
            const next = Array.from(table?.querySelectorAll('.response-col_description h5') ?? [])
                .find((heading) => heading.textContent === name)?.nextElementSibling;
            // The code itself, without the body's "Download" button.
            return (next?.matches('pre') ? next : next?.querySelector('pre'))?.textContent;
        }};
        const [body, headers] = [part('Response body'), part('Response headers')];
        if (!status || body === undefined || headers === undefined) return null;
        table.scrollIntoView();
        return [status.textContent.trim(), body, headers];"#
    );
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let shown = browser.run(&script).await;
        if let Ok((status, body, headers)) =
            serde_json::from_value::<(String, String, String)>(shown)
        {
            browser.shot(state).await;
            let status = status
                .parse()
                .unwrap_or_else(|_| panic!("{state}: status {status:?}"));
            return (status, body, headers);
        }
        if Instant::now() >= deadline {
            browser.shot(&format!("{state}-timeout")).await;
            panic!(
                "{state}: no answer shown after {WAIT_LIMIT:?}; the page's problems: {:#?}",
                browser.problems().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn authorize_then_try_it_out_on_get_name_and_set_name() {
    let proxied = spawn_behind_nginx(&[]).await;
    let app = &proxied.app;
    let (_, token) = app.signed_in_user("ada").await;
    let set = app
        .post_set_name(&token, &json!({ "name": "Ada Lovelace" }))
        .await;
    assert_eq!(set.status(), 200);
    let whole = document(&proxied, "/openapi.json").await;

    bounded(async {
        let browser = Browser::start().await;
        browser.open(&app.url("/docs")).await;
        browser
            .expect_operations("signin_whole_api", &operations_of(&whole))
            .await;

        // "Authorize": the token in the BearerAuth scheme's form.
        browser
            .element(".scheme-container button.authorize")
            .await
            .click()
            .await
            .unwrap();
        let form = browser
            .client
            .wait()
            .at_most(WAIT_LIMIT)
            .for_element(Locator::XPath(
                "//div[contains(@class, 'auth-container')][.//h4[contains(., 'BearerAuth')]]",
            ))
            .await
            .expect("the BearerAuth form");
        form.find(Locator::Css("input"))
            .await
            .unwrap()
            .send_keys(&token)
            .await
            .unwrap();
        form.find(Locator::Css("button.authorize"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // Authorized, it offers to log out instead.
        let deadline = Instant::now() + WAIT_LIMIT;
        let logout = Locator::Css("button[aria-label='Remove authorization']");
        while form.find(logout).await.is_err() {
            if Instant::now() >= deadline {
                browser.shot("signin_authorize-timeout").await;
                panic!("not authorized: {:#?}", browser.problems().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser.shot("signin_authorized").await;
        browser
            .element(".modal-ux .close-modal")
            .await
            .click()
            .await
            .unwrap();

        let block = try_out(&browser, "get", "/getName").await;
        let (status, body, _) = execute(&browser, "signin_get_name", &block).await;
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(body, json!({ "name": "Ada Lovelace" }));
        browser.assert_no_problems("signin_get_name").await;

        let block = try_out(&browser, "post", "/setName").await;
        let text = browser
            .element(&format!("{block} textarea.body-param__text"))
            .await;
        text.clear().await.unwrap();
        text.send_keys(r#"{"name": ""}"#).await.unwrap();
        let (status, body, headers) = execute(&browser, "signin_set_name_empty", &block).await;
        assert_eq!(status, 400, "{body}");
        let problem: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(problem["status"], 400, "{problem}");
        assert_eq!(problem["type"], "about:blank", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("name")),
            "{problem}"
        );
        assert!(
            headers.contains("content-type: application/problem+json"),
            "{headers}"
        );
        let id = problem["request_id"]
            .as_str()
            .expect("the problem document names its request");
        assert!(
            headers.contains(&format!("x-request-id: {id}")),
            "{headers}"
        );
        browser.assert_no_problems("signin_set_name_empty").await;
        browser.close().await;
    })
    .await;

    // The name is as it was.
    let name: Value = app.get_name(&token).await.json().await.unwrap();
    assert_eq!(name, json!({ "name": "Ada Lovelace" }));
}
