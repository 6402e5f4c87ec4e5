//! YAML text to JSON values, with errors carrying line and column.
//!
//! Parsing goes through `serde_yaml` (the maintained `yaml_serde`), which refuses duplicate
//! keys, limits nesting depth and alias expansion (so "billion laughs" documents fail fast),
//! and reports positions. Values become `serde_json::Value` so JSON Schema validation and the
//! typed model share one representation.
//!
//! Before the parser sees a text, [`check_depth`] scans it once and refuses nesting deeper
//! than [`MAX_DEPTH`]: the parser refuses it too, but only after tokenizing the whole
//! document, at a cost per token that grows with the depth (up to a thousand times slower
//! than the scan for a file of `[`).

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
    check_depth(text)?;
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

/// Deepest nesting of collections (flow and block together) a document may have; the YAML
/// parser's own limit is the same, so a document the scan lets through is judged by the parser.
pub const MAX_DEPTH: usize = 128;

/// Refuses, in one pass over the text, a YAML stream whose collections nest deeper than
/// [`MAX_DEPTH`], with the line and column where the limit is crossed.
///
/// The scan tracks what decides nesting: flow brackets outside quoted scalars, comments and
/// block scalars, and the columns of block mapping keys and sequence entries. It never counts
/// more levels than the parser would for a valid document; for some exotic layouts (a
/// sequence at its key's indentation, plain scalars continued on a line starting with a
/// quote) it counts fewer, and the parser's own limit then applies.
pub fn check_depth(text: &str) -> Result<(), YamlError> {
    DepthScan::new(text).run()
}

struct DepthScan<'a> {
    bytes: &'a [u8],
    at: usize,
    line: usize,
    /// 0-based column in characters.
    column: usize,
    flow: usize,
    /// Columns of the open block collections' nodes, innermost last.
    block: Vec<usize>,
}

impl<'a> DepthScan<'a> {
    fn new(text: &'a str) -> Self {
        DepthScan {
            bytes: text.as_bytes(),
            at: 0,
            line: 1,
            column: 0,
            flow: 0,
            block: Vec::new(),
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.at + ahead).copied()
    }

    /// True at the end, a line break, a space or a tab `ahead` bytes on.
    fn blank(&self, ahead: usize) -> bool {
        matches!(self.peek(ahead), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
    }

    /// Moves past one byte, counting lines (LF, CR LF, lone CR) and columns in characters.
    fn bump(&mut self) {
        match self.peek(0) {
            Some(b'\r') if self.peek(1) == Some(b'\n') => {
                self.at += 2;
                self.line += 1;
                self.column = 0;
            }
            Some(b'\n' | b'\r') => {
                self.at += 1;
                self.line += 1;
                self.column = 0;
            }
            Some(b) => {
                self.at += 1;
                if b & 0xC0 != 0x80 {
                    self.column += 1;
                }
            }
            None => {}
        }
    }

    fn too_deep(&self) -> YamlError {
        YamlError {
            line: self.line,
            column: self.column + 1,
            field: String::new(),
            message: format!(
                "collections nest deeper than the limit of {MAX_DEPTH} levels; the document is \
                 refused before parsing"
            ),
        }
    }

    fn check(&self) -> Result<(), YamlError> {
        if self.flow + self.block.len() > MAX_DEPTH {
            Err(self.too_deep())
        } else {
            Ok(())
        }
    }

    /// A block mapping key or sequence entry starts at `column`: it closes the deeper
    /// collections and opens one more level when it is deeper than the innermost.
    fn block_node(&mut self, column: usize) -> Result<(), YamlError> {
        if self.flow > 0 {
            return Ok(());
        }
        while self.block.last().is_some_and(|&c| c > column) {
            self.block.pop();
        }
        if self.block.last() != Some(&column) {
            self.block.push(column);
        }
        self.check()
    }

    fn skip_line(&mut self) {
        while !matches!(self.peek(0), None | Some(b'\n' | b'\r')) {
            self.bump();
        }
    }

    /// Skips a quoted scalar starting at the opening quote, escapes included.
    fn skip_quoted(&mut self, quote: u8) {
        self.bump();
        while let Some(b) = self.peek(0) {
            if quote == b'"' && b == b'\\' {
                self.bump();
                self.bump();
            } else if b == quote {
                if quote == b'\'' && self.peek(1) == Some(b'\'') {
                    self.bump();
                    self.bump();
                } else {
                    self.bump();
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// Skips the content of a block scalar whose indicator line ends here: the following
    /// lines that are blank or indented deeper than the parent node's column (`parent`, or
    /// none at the top level, where only a document marker ends it).
    fn skip_block_scalar(&mut self, parent: Option<usize>) {
        self.skip_line();
        loop {
            let start = (self.at, self.line, self.column);
            self.bump();
            if self.peek(0).is_none() {
                return;
            }
            let mut indent = 0;
            while self.peek(0) == Some(b' ') {
                self.bump();
                indent += 1;
            }
            let blank_line = matches!(self.peek(0), None | Some(b'\n' | b'\r'));
            let inside = match parent {
                Some(p) => indent > p,
                None => !self.document_marker(),
            };
            if !blank_line && !inside {
                // Back to the start of the line: its content is scanned as usual.
                (self.at, self.line, self.column) = (start.0, start.1, start.2);
                return;
            }
            self.skip_line();
        }
    }

    /// True at `---` or `...` at the start of a line, followed by a blank.
    fn document_marker(&self) -> bool {
        self.column == 0
            && matches!(
                (self.peek(0), self.peek(1), self.peek(2)),
                (Some(b'-'), Some(b'-'), Some(b'-')) | (Some(b'.'), Some(b'.'), Some(b'.'))
            )
            && self.blank(3)
    }

    fn run(mut self) -> Result<(), YamlError> {
        // True where a token may begin: at a line start, after a blank or a flow indicator.
        let mut token_start = true;
        // Column where the current scalar (a possible mapping key) began.
        let mut scalar_column = 0;
        // The previous token was a quoted scalar or a flow collection's end, after which a
        // `:` in a flow collection is a value indicator even without a blank.
        let mut json_like = false;
        while let Some(b) = self.peek(0) {
            if self.column == 0 && self.document_marker() {
                self.block.clear();
                self.flow = 0;
                self.bump();
                self.bump();
                self.bump();
                token_start = true;
                json_like = false;
                continue;
            }
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    token_start = true;
                    self.bump();
                    continue;
                }
                b'#' if token_start => {
                    self.skip_line();
                    continue;
                }
                b'%' if self.column == 0 => {
                    self.skip_line();
                    continue;
                }
                b'"' | b'\'' if token_start => {
                    scalar_column = self.column;
                    self.skip_quoted(b);
                    token_start = false;
                    json_like = true;
                    continue;
                }
                b'[' | b'{' if token_start || self.flow > 0 => {
                    if self.flow == 0 {
                        // A flow collection closes the deeper block collections.
                        let column = self.column;
                        while self.block.last().is_some_and(|&c| c > column) {
                            self.block.pop();
                        }
                    }
                    self.flow += 1;
                    self.check()?;
                    self.bump();
                    token_start = true;
                    json_like = false;
                    continue;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.bump();
                    token_start = true;
                    json_like = true;
                    continue;
                }
                b',' if self.flow > 0 => {
                    self.bump();
                    token_start = true;
                    json_like = false;
                    continue;
                }
                b'-' | b'?' if token_start && self.blank(1) => {
                    let column = self.column;
                    if b == b'-' {
                        self.block_node(column)?;
                    }
                    self.bump();
                    token_start = true;
                    json_like = false;
                    continue;
                }
                b':' if self.blank(1)
                    || (self.flow > 0
                        && (json_like
                            || matches!(self.peek(1), Some(b',' | b'[' | b']' | b'{' | b'}')))) =>
                {
                    if !token_start || json_like {
                        self.block_node(scalar_column)?;
                    }
                    self.bump();
                    token_start = true;
                    json_like = false;
                    continue;
                }
                b'|' | b'>' if token_start && self.flow == 0 => {
                    let parent = self.block.last().copied();
                    self.skip_block_scalar(parent);
                    token_start = true;
                    json_like = false;
                    continue;
                }
                _ => {}
            }
            if token_start {
                scalar_column = self.column;
            }
            token_start = false;
            json_like = false;
            self.bump();
        }
        Ok(())
    }
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

    fn depth_error(text: &str) -> YamlError {
        let e = check_depth(text).expect_err("too deep");
        assert!(e.message.contains("limit of 128 levels"), "{e:?}");
        e
    }

    #[test]
    fn deep_flow_nesting_is_refused_where_it_crosses_the_limit() {
        assert_eq!(depth_error(&"[".repeat(200_000)).column, 129);
        assert_eq!(depth_error(&"{".repeat(200_000)).column, 129);
        let e = depth_error(&"[\n".repeat(1_000));
        assert_eq!((e.line, e.column), (129, 1));
        let e = depth_error(&format!("a:\n  b: {}", "[".repeat(200)));
        assert_eq!((e.line, e.column), (2, 5 + 127));
        // Through the parser's entry points, with the same message.
        assert!(
            parse_single(&"[".repeat(1_000))
                .unwrap_err()
                .message
                .contains("128 levels")
        );
        assert!(
            parse_stream(&"{".repeat(1_000))
                .unwrap_err()
                .message
                .contains("128 levels")
        );
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let sequences = "- ".repeat(1_000);
        assert_eq!(depth_error(&sequences).column, 2 * 128 + 1);
        let mappings: String = (0..1_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(depth_error(&mappings).line, 129);
        let mixed: String = (0..1_000)
            .map(|i| format!("{}- k{i}:\n", "    ".repeat(i)))
            .collect();
        assert_eq!(depth_error(&mixed).line, 65);
    }

    #[test]
    fn nesting_within_the_limit_and_brackets_in_scalars_pass() {
        let within = format!("{}{}", "[".repeat(120), "]".repeat(120));
        assert!(check_depth(&within).is_ok());
        assert!(parse_single(&within).is_ok());
        let brackets = "[".repeat(500);
        let texts = [
            format!("a: \"{brackets}\"\n"),
            format!("a: '{brackets}'\n"),
            format!("a: x{brackets}\n"),
            format!("a: 1 # {brackets}\n"),
            format!("a: |\n  {brackets}\n  {{{brackets}\nb: 2\n"),
            format!("- key: >-\n    {brackets}\n\n    more\n- b\n"),
            format!("{{\"a\":\"{brackets}\", \"b\": ['{brackets}']}}\n"),
            format!("--- |\n {brackets}\n---\na: 1\n"),
        ];
        for text in &texts {
            assert!(check_depth(text).is_ok(), "scan: {text:.80}");
            assert!(parse_stream(text).is_ok(), "parse: {text:.80}");
        }
        // The counted depth falls when collections close.
        let siblings: String = (0..300)
            .map(|i| format!("k{i}:\n  a:\n    b: [[1]]\n"))
            .collect();
        assert!(check_depth(&siblings).is_ok());
    }

    #[test]
    fn the_depth_scan_is_linear() {
        // 2 MB of brackets: refused at the 129th, and scanning a long valid text of
        // brackets in quoted scalars is a single pass.
        let text = format!(
            "a: \"{}\"\nb: {}",
            "[".repeat(2_000_000),
            "[".repeat(2_000_000)
        );
        let started = std::time::Instant::now();
        assert!(check_depth(&text).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
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
