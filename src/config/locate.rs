//! Maps JSON pointers of a parsed document back to line and column in its YAML source.
//!
//! Built only when a diagnostic needs a position, from the event stream of `saphyr-parser`
//! (which reports spans and does not expand aliases). A pointer to a mapping entry resolves to
//! the position of its key; a sequence item to the item.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser};

use crate::diagnostic::pointer_join;

/// Positions of every node of the first document of a YAML text, by JSON pointer.
#[derive(Debug, Default)]
pub struct LocationIndex {
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map {
        pointer: String,
        key: Option<String>,
    },
    Seq {
        pointer: String,
        next: usize,
    },
    /// A complex mapping key (a mapping or sequence used as key): ignored with its content.
    Skip {
        depth: usize,
    },
}

impl LocationIndex {
    /// Indexes `text`. Malformed text yields a partial index (positions up to the error).
    pub fn build(text: &str) -> Self {
        let mut positions = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut started = false;
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = (span.start.line(), span.start.col() + 1);
            let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
            let is_node = opens || matches!(event, Event::Scalar(..) | Event::Alias(..));
            match event {
                Event::DocumentStart(_) if started => break,
                Event::DocumentStart(_) => started = true,
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::Skip { depth }) = stack.last_mut() {
                        *depth -= 1;
                        if *depth == 0 {
                            stack.pop();
                        }
                    } else {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            if !is_node {
                continue;
            }
            // Where does this node sit?
            let child_pointer = match stack.last_mut() {
                None => {
                    positions.entry(String::new()).or_insert(pos);
                    Some(String::new())
                }
                Some(Frame::Skip { depth }) => {
                    if opens {
                        *depth += 1;
                    }
                    None
                }
                Some(Frame::Seq { pointer, next }) => {
                    let p = pointer_join(pointer, &next.to_string());
                    *next += 1;
                    positions.entry(p.clone()).or_insert(pos);
                    Some(p)
                }
                Some(Frame::Map { pointer, key }) => match key.take() {
                    None => {
                        // This node is a key.
                        if let Event::Scalar(value, ..) = &event {
                            let p = pointer_join(pointer, value);
                            positions.entry(p).or_insert(pos);
                            *key = Some(value.to_string());
                        } else if opens {
                            *key = Some(String::new());
                            stack.push(Frame::Skip { depth: 1 });
                        } else {
                            *key = Some(String::new());
                        }
                        None
                    }
                    Some(k) => Some(pointer_join(pointer, &k)),
                },
            };
            if let Some(p) = child_pointer {
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        pointer: p,
                        key: None,
                    }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq {
                        pointer: p,
                        next: 0,
                    }),
                    _ => {}
                }
            }
        }
        LocationIndex { positions }
    }

    /// Position of the node at `pointer`, or of its nearest ancestor that exists; (1, 1) when
    /// nothing matches.
    pub fn locate(&self, pointer: &str) -> (usize, usize) {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return (1, 1),
            }
        }
    }
}

/// Position of the first mapping key that repeats an earlier key of the same mapping, in the
/// `document`-th document (0-based) of a YAML stream.
pub fn first_duplicate_key(text: &str, document: usize) -> Option<(usize, usize)> {
    // One key set per open collection; sequences push `None`.
    let mut stack: Vec<Option<(HashSet<String>, bool)>> = Vec::new();
    let mut doc = None::<usize>;
    let mut parser = Parser::new_from_str(text);
    while let Some(Ok((event, span))) = parser.next_event() {
        match event {
            Event::DocumentStart(_) => {
                doc = Some(doc.map_or(0, |d| d + 1));
                stack.clear();
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        if doc != Some(document) {
            continue;
        }
        let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
        let is_node = opens || matches!(event, Event::Scalar(..) | Event::Alias(..));
        if !is_node {
            continue;
        }
        if let Some(Some((keys, expecting_key))) = stack.last_mut() {
            if *expecting_key {
                if let Event::Scalar(value, ..) = &event {
                    if !keys.insert(value.to_string()) {
                        return Some((span.start.line(), span.start.col() + 1));
                    }
                }
            }
            *expecting_key = !*expecting_key;
        }
        match event {
            Event::MappingStart(..) => stack.push(Some((HashSet::new(), true))),
            Event::SequenceStart(..) => stack.push(None),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: bowline/v1
kind: PipelineTemplate
spec:
  stages:
    - name: a
      type: deploy
    - name: b
      dependsOn: [a, c]
  weird/key: 1
";

    #[test]
    fn keys_and_items_resolve() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(idx.locate(""), (1, 1));
        assert_eq!(idx.locate("/kind"), (2, 1));
        assert_eq!(idx.locate("/spec/stages"), (4, 3));
        assert_eq!(idx.locate("/spec/stages/1"), (7, 7));
        assert_eq!(idx.locate("/spec/stages/1/dependsOn/1"), (8, 22));
        assert_eq!(idx.locate("/spec/weird~1key"), (9, 3));
    }

    #[test]
    fn missing_pointer_falls_back_to_ancestor() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(idx.locate("/spec/stages/0/strategy"), (5, 7));
        assert_eq!(idx.locate("/nope"), (1, 1));
    }

    #[test]
    fn duplicate_keys_are_found_per_document() {
        let text = "a: 1\n---\nb:\n  c: 1\n  d: [1, {e: 1, e: 2}]\n  c: 2\n";
        assert_eq!(first_duplicate_key(text, 0), None);
        assert_eq!(first_duplicate_key(text, 1), Some((5, 17)));
    }

    #[test]
    fn complex_keys_and_aliases_do_not_confuse_it() {
        let text = "? [a, b]\n: 1\nx: &anchor {y: 1}\nz: *anchor\nw: 2\n";
        let idx = LocationIndex::build(text);
        assert_eq!(idx.locate("/w"), (5, 1));
        assert_eq!(idx.locate("/x/y"), (3, 13));
    }
}
