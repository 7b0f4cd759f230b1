//! The OpenAPI document as served: poem-openapi's, with one truth added.
//! Request bodies reject unknown fields (`deny_unknown_fields`, so no one
//! slips a `role` into `/setName`), which poem-openapi does not describe, so
//! each request body schema gets `additionalProperties: false`.

use serde_json::Value;

pub fn document(spec: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    let bodies: Vec<String> = document["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(|operations| operations.as_object())
        .flat_map(|operations| operations.values())
        .filter_map(|operation| operation["requestBody"]["content"].as_object())
        .flat_map(|media_types| media_types.values())
        .filter_map(|media_type| {
            let name = media_type["schema"]["$ref"].as_str()?.rsplit('/').next()?;
            Some(name.to_owned())
        })
        .collect();
    for name in bodies {
        if let Some(schema) = document["components"]["schemas"][&name].as_object_mut() {
            schema.insert("additionalProperties".into(), false.into());
        }
    }
    document.to_string()
}
