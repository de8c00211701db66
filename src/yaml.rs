//! YAML in and out. Parsing goes through `serde_norway` (a maintained fork of serde_yaml), the
//! one place that touches the YAML crate. Writing uses a small emitter over JSON values (written
//! here) because the crate writes floats such as `4e-8` without a dot, which YAML 1.1 readers
//! (PyYAML, the most common consumer of our reports) read as strings; ours always writes a dot
//! and a signed exponent (`4.0e-8`), double-quoted strings, flow lists of scalars, and block
//! maps, so the text reads the same under YAML 1.1 and 1.2.

use serde::Serialize;

/// YAML text that cannot be read: the YAML crate's message (kept as text, so that the crate's
/// types stay inside this module).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    message: String,
}

impl ParseError {
    fn new(e: impl std::fmt::Display) -> ParseError {
        ParseError {
            message: e.to_string(),
        }
    }
}

/// Parses YAML into a JSON value (the form schemas validate).
/// Duplicate keys are an error (YAML requires unique keys; a JSON value would keep the last).
pub fn parse(text: &str) -> Result<serde_json::Value, ParseError> {
    let value = serde_norway::from_str::<serde_norway::Value>(text).map_err(ParseError::new)?;
    serde_json::to_value(value).map_err(ParseError::new)
}

/// Serializes any value as YAML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let mut out = String::new();
    match &value {
        serde_json::Value::Object(map) if !map.is_empty() => emit_map(map, 0, &mut out),
        serde_json::Value::Array(items) if !items.is_empty() && !all_scalars(items) => {
            emit_list(items, 0, &mut out)
        }
        other => {
            out.push_str(&scalar_or_flow(other));
            out.push('\n');
        }
    }
    Ok(out)
}

fn all_scalars(items: &[serde_json::Value]) -> bool {
    items
        .iter()
        .all(|v| !v.is_object() && !v.is_array() || is_flow(v))
}

/// Arrays of scalars (and arrays of such arrays, e.g. an affine) are written on one line.
fn is_flow(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(items) => items
            .iter()
            .all(|i| !i.is_object() && (!i.is_array() || is_flow(i))),
        _ => true,
    }
}

fn emit_map(map: &serde_json::Map<String, serde_json::Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_text(key));
        out.push(':');
        emit_value(value, indent, out);
    }
}

fn emit_list(items: &[serde_json::Value], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            serde_json::Value::Object(m) if !m.is_empty() => {
                // first key on the dash line, the rest aligned under it
                let mut inner = String::new();
                emit_map(m, indent + 2, &mut inner);
                out.push(' ');
                out.push_str(inner.trim_start());
            }
            other => emit_value(other, indent, out),
        }
    }
}

/// Writes `value` after a `key:` or `-` that is already on the line.
fn emit_value(value: &serde_json::Value, indent: usize, out: &mut String) {
    match value {
        serde_json::Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(m, indent + 2, out);
        }
        serde_json::Value::Array(items) if !is_flow(value) => {
            out.push('\n');
            emit_list(items, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar_or_flow(other));
            out.push('\n');
        }
    }
}

fn scalar_or_flow(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => number_text(n),
        serde_json::Value::String(s) => {
            serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
        }
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(scalar_or_flow)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        serde_json::Value::Object(_) => "{}".to_string(),
    }
}

fn key_text(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap_or_default()
    }
}

/// Integers as they are; floats with a dot, and a signed exponent when one is needed.
fn number_text(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let magnitude = f.abs();
    if f == 0.0 || (1e-4..1e15).contains(&magnitude) {
        let text = format!("{f}");
        return if text.contains('.') {
            text
        } else {
            format!("{text}.0")
        };
    }
    let text = format!("{f:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    let exponent = if exponent.starts_with('-') {
        exponent.to_string()
    } else {
        format!("+{exponent}")
    };
    format!("{mantissa}e{exponent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_yaml_parses_back_to_the_same_value() {
        let v = serde_json::json!({
            "tiny": 4e-8, "big": 1.5e20, "int": 7, "neg": -0.25, "zero": 0.0, "whole": 3.0,
            "s": "yes: no # \"q\"", "true": true, "n": null, "empty": [], "obj": {},
            "affine": [[1.0, 0.0], [0.0, -2.5]],
            "blobs": [{"id": 1, "c": [1.0, 2.5, 3.0], "m": {"a": 1.0}}, {"id": 2, "c": [], "m": {}}],
            "nested": {"list": [{"x": 1}, [1, 2]], "k-ey": "v"}
        });
        let text = to_string(&v).unwrap();
        assert_eq!(parse(&text).unwrap(), v, "{text}");
        assert!(
            text.contains("tiny: 4.0e-8")
                && text.contains("big: 1.5e+20")
                && text.contains("whole: 3.0"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert_eq!(parse("a: {b: 1}").unwrap()["a"]["b"], 1);
    }
}
