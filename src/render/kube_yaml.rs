//! Rendered manifests read the way Kubernetes reads them.
//!
//! `kubectl` and the Kubernetes clients read manifests as YAML 1.1 (go-yaml v2 through
//! `sigs.k8s.io/yaml`), and what they send is what the cluster gets. So a plain `0644` is the
//! octal integer 420, `010` is 8, `1_000` is 1000, `0x1F` is 31; `y`, `yes` and `on` are
//! `true` and `n`, `no` and `off` are `false` (in any of their three spellings); `<<` merges
//! mappings (later entries override earlier ones, and in `<<: [a, b]` the first mapping
//! wins); keys that are not strings become strings (`yes:` is the key `"true"`), and a null
//! key is refused, as `kubectl` refuses it. Quoted and block scalars are always strings.
//! Timestamps stay strings, as `kubectl` sends them; `.inf` and `.nan`, which JSON cannot
//! hold, are errors (as they are for `kubectl`).
//!
//! Where this reader is stricter than `kubectl`, it says so: a key written twice in one
//! mapping is an error (`kubectl` silently keeps the last), and so is a document whose
//! aliases expand beyond [`MAX_NODES`]. bowline's own documents (`bowline.yaml`, `app.yaml`,
//! pipeline templates, canary configs) are read as strict YAML 1.2 by
//! [`crate::config::yaml`] instead.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

use crate::config::yaml::{self, StreamDocument, YamlError};

/// Nodes one stream may produce, aliases expanded: a "billion laughs" document stops here.
pub const MAX_NODES: usize = 1_000_000;

/// Parses a multi-document YAML stream of manifests with Kubernetes' semantics, skipping
/// empty documents.
pub fn parse_stream(text: &str) -> Result<Vec<StreamDocument>, YamlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    yaml::check_depth(text)?;
    match compose(text) {
        Ok(documents) => Ok(documents),
        // The strict parser words syntax errors the way every other YAML error of bowline is
        // worded; its verdict is used whenever it also refuses the text.
        Err(Refusal::Syntax(e)) => Err(yaml::parse_stream(text).err().unwrap_or(e)),
        Err(Refusal::Content(e)) => Err(e),
    }
}

/// Why a stream is refused: text the strict parser may word better (syntax, a repeated key),
/// or YAML that is not a manifest.
enum Refusal {
    Syntax(YamlError),
    Content(YamlError),
}

impl From<YamlError> for Refusal {
    fn from(e: YamlError) -> Self {
        Refusal::Content(e)
    }
}

enum Frame {
    Sequence {
        anchor: usize,
        items: Vec<Value>,
    },
    Mapping {
        anchor: usize,
        map: Map<String, Value>,
        /// Keys written in this mapping (not merged into it), to refuse a repeated one.
        written: HashSet<String>,
        /// The key whose value comes next, with whether it is the merge key `<<`.
        key: Option<(String, bool)>,
    },
}

struct Composer {
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
}

fn error_at(span: &Span, message: impl Into<String>) -> YamlError {
    YamlError {
        line: span.start.line(),
        column: span.start.col() + 1,
        field: String::new(),
        message: message.into(),
    }
}

/// Nodes in a value (for the alias budget).
fn size(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(size).sum::<usize>(),
        _ => 1,
    }
}

fn compose(text: &str) -> Result<Vec<StreamDocument>, Refusal> {
    let mut parser = Parser::new_from_str(text);
    let mut composer = Composer {
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut documents = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    let mut start_line = 1;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            Refusal::Syntax(YamlError {
                line: e.marker().line(),
                column: e.marker().col() + 1,
                field: String::new(),
                message: e.info().to_string(),
            })
        })?;
        let node = match event {
            Event::DocumentStart(_) => {
                start_line = span.start.line();
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                if let Some(value) = root.take().filter(|v| !v.is_null()) {
                    documents.push(StreamDocument {
                        line: start_line,
                        value,
                    });
                }
                continue;
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Sequence {
                    anchor,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Mapping {
                    anchor,
                    map: Map::new(),
                    written: HashSet::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Sequence { anchor, items }) => {
                    composer.anchor(anchor, Value::Array(items))
                }
                _ => return Err(Refusal::Syntax(error_at(&span, "unbalanced sequence"))),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Mapping {
                    anchor, map, key, ..
                }) => {
                    if let Some((key, _)) = key {
                        return Err(Refusal::Syntax(error_at(
                            &span,
                            format!("key \"{key}\" has no value"),
                        )));
                    }
                    composer.anchor(anchor, Value::Object(map))
                }
                _ => return Err(Refusal::Syntax(error_at(&span, "unbalanced mapping"))),
            },
            Event::Alias(id) => {
                let (value, nodes) = composer.anchors.get(&id).cloned().ok_or_else(|| {
                    Refusal::Syntax(error_at(&span, "alias to an unknown anchor"))
                })?;
                composer.count(nodes, &span)?;
                value
            }
            Event::Scalar(text, style, anchor, tag) => {
                let in_key_position =
                    matches!(stack.last(), Some(Frame::Mapping { key: None, .. }));
                let value = resolve(&text, style, tag.as_deref(), &span)?;
                if in_key_position {
                    let is_merge = style == ScalarStyle::Plain && tag.is_none() && text == "<<";
                    let key = key_string(value, &span)?;
                    if let Some(Frame::Mapping { key: slot, .. }) = stack.last_mut() {
                        *slot = Some((key, is_merge));
                    }
                    continue;
                }
                composer.count(1, &span)?;
                composer.anchor(anchor, value)
            }
        };
        // A finished node: the value of the current mapping key, an item, or the root.
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Sequence { items, .. }) => items.push(node),
            Some(Frame::Mapping {
                map, written, key, ..
            }) => match key.take() {
                Some((_, true)) => merge(map, node, &span)?,
                Some((name, false)) => {
                    if !written.insert(name.clone()) {
                        // The strict parser names the mapping and the key's position.
                        return Err(Refusal::Syntax(error_at(
                            &span,
                            format!("duplicate key \"{name}\""),
                        )));
                    }
                    map.insert(name, node);
                }
                None => {
                    return Err(Refusal::Content(error_at(
                        &span,
                        "mapping keys must be plain scalars, found a mapping or sequence",
                    )));
                }
            },
        }
    }
    Ok(documents)
}

impl Composer {
    fn count(&mut self, nodes: usize, span: &Span) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_NODES {
            return Err(error_at(
                span,
                format!(
                    "too many nodes (over {MAX_NODES}, aliases expanded): anchors and aliases would expand this stream beyond a safe size"
                ),
            ));
        }
        Ok(())
    }

    /// Records `value` under `anchor` (0: none) and returns it.
    fn anchor(&mut self, anchor: usize, value: Value) -> Value {
        if anchor > 0 {
            let nodes = size(&value);
            self.anchors.insert(anchor, (value.clone(), nodes));
        }
        value
    }
}

/// `<<: mapping` sets the mapping's entries (over what came before); `<<: [a, b]` does so for
/// each, the first mapping winning.
fn merge(map: &mut Map<String, Value>, value: Value, span: &Span) -> Result<(), YamlError> {
    let wrong = || {
        error_at(
            span,
            "the merge key << takes a mapping or a sequence of mappings",
        )
    };
    match value {
        Value::Object(entries) => {
            map.extend(entries);
            Ok(())
        }
        Value::Array(items) => {
            for item in items.into_iter().rev() {
                match item {
                    Value::Object(entries) => map.extend(entries),
                    _ => return Err(wrong()),
                }
            }
            Ok(())
        }
        _ => Err(wrong()),
    }
}

/// A key as Kubernetes keeps it: non-string scalars as their text (`true`, `420`); a null
/// key, which `kubectl` refuses, is refused.
fn key_string(value: Value, span: &Span) -> Result<String, YamlError> {
    match value {
        Value::String(s) => Ok(s),
        Value::Null => Err(error_at(
            span,
            "a null key (~ or empty) cannot be a key of a manifest; quote it to mean the text",
        )),
        other => Ok(other.to_string()),
    }
}

/// The value of a scalar: a tag from YAML's core schema decides, else quoted and block
/// scalars are strings and plain ones are resolved by YAML 1.1's rules.
fn resolve(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: &Span,
) -> Result<Value, YamlError> {
    let core = tag.filter(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!");
    if let Some(tag) = core {
        let resolved = resolve_plain(text, span)?;
        let fits = match tag.suffix.as_str() {
            "str" => return Ok(Value::String(text.to_string())),
            "int" => resolved.is_i64() || resolved.is_u64(),
            "float" => resolved.is_number(),
            "bool" => resolved.is_boolean(),
            "null" => resolved.is_null(),
            _ => true,
        };
        return if fits {
            Ok(resolved)
        } else {
            Err(error_at(
                span,
                format!("\"{text}\" is not a valid !!{}", tag.suffix),
            ))
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_string()));
    }
    resolve_plain(text, span)
}

/// YAML 1.1 as go-yaml v2 resolves a plain scalar.
fn resolve_plain(text: &str, span: &Span) -> Result<Value, YamlError> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Value::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Value::Bool(false));
        }
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(error_at(
                span,
                format!("{text} is not a number JSON can hold; quote it to keep it a string"),
            ));
        }
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Ok(Value::String(text.to_string()));
    }
    let plain = text.replace('_', "");
    if let Some(n) = parse_int(&plain) {
        return Ok(Value::Number(n));
    }
    if is_float(&plain)
        && let Some(n) = plain.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Ok(Value::Number(n));
    }
    Ok(Value::String(text.to_string()))
}

/// An integer as Go's `strconv.ParseInt(s, 0, 64)` reads it (sign, `0x`, `0o`, `0b`, and a
/// leading `0` for octal), falling back to an unsigned and then a float past 64 bits.
fn parse_int(text: &str) -> Option<Number> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if let Some(rest) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, rest)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(body, radix).ok()?;
    if negative {
        let value = i128::try_from(magnitude).ok().map(|m| -m)?;
        match i64::try_from(value) {
            Ok(v) => Some(Number::from(v)),
            Err(_) => Number::from_f64(value as f64),
        }
    } else if let Ok(v) = i64::try_from(magnitude) {
        Some(Number::from(v))
    } else if let Ok(v) = u64::try_from(magnitude) {
        Some(Number::from(v))
    } else {
        Number::from_f64(magnitude as f64)
    }
}

/// go-yaml v2's shape of a float: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && fraction.bytes().all(|b| b.is_ascii_digit()),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut docs = parse_stream(text).expect("parses");
        assert_eq!(docs.len(), 1);
        docs.remove(0).value
    }

    #[test]
    fn plain_scalars_resolve_as_yaml_1_1() {
        let value = one(
            "mode: 0644\neight: 010\nten: 1_0\nhex: 0x1F\nbin: 0b101\noct: 0o14\nneg: -0755\nplus: +12\n\
             float: 1e3\nhalf: .5\nyes: yes\nflag: on\noff: Off\nquoted: '0644'\nblock: |\n  0644\n\
             date: 2001-12-14\nsexagesimal: 1:20\ntilde: ~\nempty:\nversion: 1.10\nbig: 12345678901234567890\n",
        );
        assert_eq!(
            value,
            json!({
                "mode": 420, "eight": 8, "ten": 10, "hex": 31, "bin": 5, "oct": 12, "neg": -493,
                "plus": 12, "float": 1000.0, "half": 0.5, "true": true, "flag": true,
                "false": false, "quoted": "0644", "block": "0644\n", "date": "2001-12-14",
                "sexagesimal": "1:20", "tilde": null, "empty": null, "version": 1.1,
                "big": 12345678901234567890u64,
            })
        );
    }

    #[test]
    fn bowline_documents_stay_strict_yaml_1_2() {
        let strict = yaml::parse_single("mode: 0644\nflag: yes\nten: 1_0\n").expect("parses");
        assert_eq!(strict, json!({"mode": "0644", "flag": "yes", "ten": "1_0"}));
        assert_eq!(
            one("mode: 0644\nflag: yes\nten: 1_0\n"),
            json!({"mode": 420, "flag": true, "ten": 10})
        );
    }

    #[test]
    fn merge_keys_apply_in_order_and_the_first_mapping_of_a_list_wins() {
        let value = one(
            "base: &base {a: '1', b: '2'}\nbefore:\n  a: explicit\n  <<: *base\nafter:\n  <<: *base\n  a: explicit\nlist:\n  <<: [{x: first}, {x: second, z: '2'}]\n",
        );
        assert_eq!(value["before"], json!({"a": "1", "b": "2"}));
        assert_eq!(value["after"], json!({"a": "explicit", "b": "2"}));
        assert_eq!(value["list"], json!({"x": "first", "z": "2"}));
    }

    #[test]
    fn tags_decide_over_resolution() {
        let value = one("a: !!str 0644\nb: !!int '0x10'\nc: !!float 1\n");
        assert_eq!(value, json!({"a": "0644", "b": 16, "c": 1}));
        let error = parse_stream("a: !!int nope\n").expect_err("refused");
        assert!(error.message.contains("not a valid !!int"), "{error:?}");
    }

    #[test]
    fn refusals_name_their_position() {
        let duplicate = parse_stream("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(duplicate.line, 3, "{duplicate:?}");
        assert!(duplicate.message.contains("duplicate key"), "{duplicate:?}");
        // `yes` and `on` are both the key "true".
        let resolved = parse_stream("yes: 1\non: 2\n").expect_err("duplicate");
        assert!(
            resolved.message.contains("duplicate key \"true\""),
            "{resolved:?}"
        );
        let infinite = parse_stream("a: .inf\n").expect_err("inf");
        assert!(infinite.message.contains("quote it"), "{infinite:?}");
        let laughs: String = std::iter::once("a: &a [x, x, x, x, x, x, x, x, x, x]\n".to_string())
            .chain((b'b'..=b'h').map(|c| {
                let prev = (c - 1) as char;
                let c = c as char;
                format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n")
            }))
            .collect();
        let bomb = parse_stream(&laughs).expect_err("alias bomb");
        assert!(
            bomb.message.contains("too many") || bomb.message.contains("repetition"),
            "{bomb:?}"
        );
        let syntax = parse_stream("a: b: c\n").expect_err("syntax");
        assert_eq!(syntax.line, 1, "{syntax:?}");
    }

    #[test]
    fn documents_keep_their_first_line_and_empty_ones_are_skipped() {
        let docs = parse_stream("a: 1\n---\n---\n# only a comment\n---\nb: 2\n").expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value, json!({"a": 1}));
        assert_eq!((docs[1].line, docs[1].value.clone()), (5, json!({"b": 2})));
    }
}
