//! YAML text to JSON values, with errors carrying line and column.
//!
//! Parsing goes through `serde_yaml` (the maintained `yaml_serde`), which refuses duplicate
//! keys, limits nesting depth and alias expansion (so "billion laughs" documents fail fast),
//! and reports positions. Values become `serde_json::Value` so JSON Schema validation and the
//! typed model share one representation.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A YAML syntax or structure error with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the mapping concerned, when the parser names one.
    pub field: String,
    /// What the parser said.
    pub message: String,
}

impl YamlError {
    fn from_serde(e: &serde_yaml::Error) -> Self {
        let (line, column) = e
            .location()
            .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
        let mut message = e.to_string();
        // yaml_serde appends " at line L column C" for the primary position, which is reported
        // apart; any further context ("while scanning a quoted scalar at line 11 column 10")
        // points at the real cause and stays.
        let primary = format!(" at line {line} column {column}");
        if let Some(i) = message.find(&primary) {
            message.replace_range(i..i + primary.len(), "");
        }
        if message == "repetition limit exceeded" {
            message = "too many alias expansions (repetition limit exceeded): anchors and \
                       aliases would expand this document beyond a safe size"
                .to_string();
        }
        YamlError {
            line,
            column,
            field: String::new(),
            message,
        }
    }

    /// Our own visitor's errors (duplicate keys) carry at best the position of the document;
    /// yaml_serde prefixes nested ones with the path of the mapping (`spec.metrics[0]: ...`).
    /// Moves that path into `field` and finds the repeated key in the source.
    fn locate_duplicate(&mut self, text: &str, document: usize) {
        let Some(at) = self.message.find("duplicate key") else {
            return;
        };
        if at > 0 {
            self.field = self.message[..at].trim_end_matches([':', ' ']).to_string();
            self.message = self.message[at..].to_string();
        }
        if let Some((line, column)) = super::locate::first_duplicate_key(text, document) {
            self.line = line;
            self.column = column;
        }
    }
}

/// Parses a file that must hold exactly one YAML document.
pub fn parse_single(text: &str) -> Result<Value, YamlError> {
    let mut docs = parse_stream(text)?;
    match docs.len() {
        0 => Err(YamlError {
            line: 1,
            column: 1,
            field: String::new(),
            message: "the file holds no YAML document".to_string(),
        }),
        1 => Ok(docs.remove(0).value),
        _ => {
            let line = docs[1].line;
            Err(YamlError {
                line,
                column: 1,
                field: String::new(),
                message: format!(
                    "expected one YAML document, found {}; put each document in a file of its own",
                    docs.len()
                ),
            })
        }
    }
}

/// One document of a YAML stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDocument {
    /// 1-based line where the document starts.
    pub line: usize,
    /// Its content.
    pub value: Value,
}

/// Parses a multi-document YAML stream, skipping empty documents.
pub fn parse_stream(text: &str) -> Result<Vec<StreamDocument>, YamlError> {
    // A byte order mark is allowed by YAML and written by some editors; the parser does not
    // skip it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let starts = document_start_lines(text);
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = StrictValue.deserialize(document).map_err(|e| {
            let mut error = YamlError::from_serde(&e);
            error.locate_duplicate(text, i);
            error
        })?;
        if !value.is_null() {
            let line = starts.get(i).copied().unwrap_or(1);
            out.push(StreamDocument { line, value });
        }
    }
    Ok(out)
}

/// Deserializes any YAML value into a `serde_json::Value`, refusing duplicate mapping keys
/// (which `serde_json` would silently overwrite).
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(StrictValue)? {
            let key = match key {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                other => {
                    return Err(de::Error::custom(format!(
                        "mapping keys must be plain scalars, found {other}"
                    )));
                }
            };
            let value = map.next_value_seed(StrictValue)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Line numbers where each document of a stream begins, from `---` markers (the first document
/// may start without one). Good enough for messages; the content is parsed by the real parser.
fn document_start_lines(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            if !starts.is_empty() || seen_content {
                starts.push(i + 1);
            } else {
                starts.push(i + 1);
                seen_content = true;
            }
        } else if !seen_content {
            let trimmed = line.trim();
            if !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%') {
                seen_content = true;
                starts.push(i + 1);
            }
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_document() {
        let v = parse_single("a: 1\nb: [x, y]\n").unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"][1], "y");
    }

    #[test]
    fn duplicate_keys_are_refused_with_position() {
        let e = parse_single("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e:?}");
        assert_eq!(e.line, 3);
    }

    #[test]
    fn malformed_yaml_has_position() {
        let e = parse_single("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
    }

    #[test]
    fn alias_bomb_fails_fast() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let e = parse_single(&text).unwrap_err();
        assert!(e.message.contains("repetition limit"), "{e:?}");
    }

    #[test]
    fn deep_nesting_fails_cleanly() {
        let text = "[".repeat(10_000);
        assert!(parse_single(&text).is_err());
    }

    #[test]
    fn multi_document_in_single_file_is_refused() {
        let e = parse_single("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("found 2"));
    }

    #[test]
    fn stream_skips_empty_documents_and_tracks_lines() {
        let docs = parse_stream("---\na: 1\n---\n---\n# only a comment\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 1);
        assert_eq!(docs[1].line, 4);
    }
}
