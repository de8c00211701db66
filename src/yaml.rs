//! The one place that touches the YAML crate (`serde_norway`, a maintained fork of serde_yaml):
//! YAML text to a JSON value and back.

use serde::Serialize;

/// Parses YAML into a JSON value (the form schemas validate).
pub fn parse(text: &str) -> Result<serde_json::Value, String> {
    serde_norway::from_str::<serde_json::Value>(text).map_err(|e| e.to_string())
}

/// Serializes any value as YAML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_norway::to_string(value).map_err(|e| e.to_string())
}
