//! Key paths (`policy[2].limits[0].max_usd`) and finding the line a key path stands on.

use std::fmt;
use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a key in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(vec![])
    }

    pub(crate) fn key(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    pub(crate) fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> KeyPath {
        use serde_path_to_error::Segment;
        KeyPath(
            path.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } => Some(Seg::Key(key.clone())),
                    Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Finds lines in the source text.
pub(crate) struct Locator<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str) -> Locator<'a> {
        Locator { text, doc: ImDocument::parse(text).ok() }
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The line of the deepest part of `path` present in the file: the key itself, or the table
    /// that should have held it.
    pub(crate) fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best: Option<std::ops::Range<usize>> = None;
        for seg in &path.0 {
            let (next, span) = match (node, seg) {
                (Node::Item(Item::Table(t)), s) | (Node::Table(t), s) => match s {
                    Seg::Key(k) => match t.get_key_value(k) {
                        Some((key, item)) => (Node::Item(item), key.span().or_else(|| item.span())),
                        None => break,
                    },
                    Seg::Index(_) => break,
                },
                (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => match a.get(*i) {
                    Some(t) => (Node::Table(t), t.span()),
                    None => break,
                },
                (Node::Item(Item::Value(v)), s) | (Node::Value(v), s) => match (v, s) {
                    (Value::InlineTable(t), Seg::Key(k)) => match t.get_key_value(k) {
                        Some((key, item)) => (Node::Item(item), key.span().or_else(|| item.span())),
                        None => break,
                    },
                    (Value::Array(a), Seg::Index(i)) => match a.get(*i) {
                        Some(value) => (Node::Value(value), value.span()),
                        None => break,
                    },
                    _ => break,
                },
                _ => break,
            };
            if span.is_some() {
                best = span;
            }
            node = next;
        }
        best.map(|span| self.line_at(span.start))
    }
}
