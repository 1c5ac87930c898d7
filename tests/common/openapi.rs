//! What kube-apiserver does to a custom resource with its CRD's
//! `openAPIV3Schema` on every create, update and status write, for the
//! rules CRDs in this project (ours and upstream WVA's) use: pruning of
//! unknown fields, defaults, then validation of `type`, `required`,
//! `minLength`/`maxLength`, `pattern`, `enum`, `minimum`/`maximum`,
//! `nullable`, `format: date-time`, and `x-kubernetes-list-type: map`
//! (unique keys). Errors read as kube-apiserver's do:
//! `<path>: Invalid value: <value>: <path> in body should ...`.
//! CEL rules (`x-kubernetes-validations`) are not evaluated.

use serde_json::{Map, Value};

/// The `openAPIV3Schema` of a CRD's served storage version.
pub fn crd_schema(crd: &Value) -> Option<Value> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["storage"] == true)
        .or_else(|| crd["spec"]["versions"].get(0))
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
}

/// Prunes and defaults `object` in place, then validates it: the object as
/// the API server would store it, or every field error.
pub fn admit(schema: &Value, object: &mut Value) -> Result<(), Vec<String>> {
    prune_and_default(schema, object, true);
    let mut errors = Vec::new();
    validate(schema, object, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// Structural pruning (fields the schema does not name are dropped; the
/// root's apiVersion, kind and metadata are kept) and defaulting.
fn prune_and_default(schema: &Value, value: &mut Value, root: bool) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                if !preserves_unknown(schema) && schema.get("additionalProperties").is_none() {
                    map.retain(|k, _| {
                        props.contains_key(k)
                            || (root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                    });
                }
                for (k, sub) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    if !map.contains_key(k) {
                        if let Some(d) = sub.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(v) = map.get_mut(k) {
                        prune_and_default(sub, v, false);
                    }
                }
            } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for v in map.values_mut() {
                    prune_and_default(extra, v, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for v in items {
                    prune_and_default(item, v, false);
                }
            }
        }
        _ => {}
    }
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_matches(kind: &str, v: &Value) -> bool {
    match kind {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    }
}

fn validate(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let shown_path = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if schema["nullable"] != true && schema.get("type").is_some() {
            errors.push(format!(
                "{shown_path}: Invalid value: \"null\": {shown_path} in body must be of type {}: \"null\"",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    if let Some(kind) = schema["type"].as_str() {
        if !type_matches(kind, v) {
            errors.push(format!(
                "{shown_path}: Invalid value: {}: {shown_path} in body must be of type {kind}",
                shown(v)
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(shown).collect();
            errors.push(format!(
                "{shown_path}: Unsupported value: {}: supported values: {}",
                shown(v),
                list.join(", ")
            ));
        }
    }
    match v {
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64() {
                if chars < min {
                    errors.push(format!(
                        "{shown_path}: Invalid value: {}: {shown_path} in body should be at least {min} chars long",
                        shown(v)
                    ));
                }
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                if chars > max {
                    errors.push(format!(
                        "{shown_path}: Too long: may not be more than {max} bytes"
                    ));
                }
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => errors.push(format!(
                        "{shown_path}: Invalid value: {}: {shown_path} in body should match '{pattern}'",
                        shown(v)
                    )),
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{shown_path}: the schema's pattern {pattern:?} does not compile: {e}")),
                }
            }
            if schema["format"] == "date-time" && s.parse::<jiff::Timestamp>().is_err() {
                errors.push(format!(
                    "{shown_path}: Invalid value: {}: {shown_path} in body must be of type date-time",
                    shown(v)
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema["minimum"].as_f64() {
                if x < min {
                    errors.push(format!(
                        "{shown_path}: Invalid value: {n}: {shown_path} in body should be greater than or equal to {min}"
                    ));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                if x > max {
                    errors.push(format!(
                        "{shown_path}: Invalid value: {n}: {shown_path} in body should be less than or equal to {max}"
                    ));
                }
            }
        }
        Value::Object(map) => validate_object(schema, map, path, errors),
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, x) in items.iter().enumerate() {
                    validate(item, x, &format!("{path}[{i}]"), errors);
                }
            }
            if schema["x-kubernetes-list-type"] == "map" {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen: Vec<Vec<&Value>> = Vec::new();
                for (i, x) in items.iter().enumerate() {
                    let key: Vec<&Value> = keys.iter().map(|k| &x[*k]).collect();
                    if seen.contains(&key) {
                        errors.push(format!(
                            "{path}[{i}]: Duplicate value: {}",
                            key.iter().map(|k| shown(k)).collect::<Vec<_>>().join(",")
                        ));
                    }
                    seen.push(key);
                }
            }
        }
        _ => {}
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    if let Some(required) = schema["required"].as_array() {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errors.push(format!("{}: Required value", field(path, r)));
            }
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            if path.is_empty() && k == "metadata" {
                continue;
            }
            if let Some(x) = map.get(k) {
                validate(sub, x, &field(path, k), errors);
            }
        }
    }
}
