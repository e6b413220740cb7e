//! Limits a query must meet before async-graphql validates and runs it, each checked in
//! time linear in the query's size:
//!
//! - bracket nesting, before parsing, so that no input can exhaust the parser's stack;
//! - field depth: at most [`MAX_DEPTH`] for data, with fragments inlined, counted as
//!   async-graphql's `limit_depth` counts (every field, leaves included). Introspection
//!   (`__schema`, `__type`) may go to [`MAX_INTROSPECTION_DEPTH`], because the query every
//!   GraphQL tool sends (GraphiQL's included) nests `ofType` deeper than 10;
//! - size: at most [`MAX_NODES`] selections once fragments are inlined, so that fragments
//!   spread into each other cannot make validation exponential.
//!
//! [`Documents`] parses and checks a query once and remembers the outcome for the next
//! request with the same text: parsing is the largest single cost of a small query.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Request, ServerError};

pub const MAX_DEPTH: usize = 10;
pub const MAX_INTROSPECTION_DEPTH: usize = 20;
pub const MAX_NODES: usize = 2_000;
/// Brackets (`{`, `(`, `[`) and fragment spreads open at once.
pub const MAX_NESTING: usize = 64;

pub const TOO_DEEP: &str = "Query is nested too deep.";
pub const TOO_LARGE: &str = "Query is too large.";

/// Queries up to this size are remembered, at most this many at once (then forgotten all
/// together): a few MiB at worst.
const CACHED_QUERY_BYTES: usize = 2048;
const CACHED_QUERIES: usize = 256;

/// The parsed documents of recent queries that passed [`prescan`] and [`check`].
#[derive(Default)]
pub struct Documents {
    cache: Mutex<HashMap<String, ExecutableDocument>>,
}

impl Documents {
    /// Gives `request` its parsed document, or says why the query is refused.
    pub fn prepare(&self, request: &mut Request) -> Result<(), ServerError> {
        let known = self.lock().get(&request.query).cloned();
        if let Some(doc) = known {
            request.set_parsed_query(doc);
            return Ok(());
        }
        prescan(&request.query).map_err(|m| ServerError::new(m, None))?;
        let query = (request.query.len() <= CACHED_QUERY_BYTES).then(|| request.query.clone());
        let doc = request.parsed_query()?;
        check(doc).map_err(|m| ServerError::new(m, None))?;
        if let Some(query) = query {
            let doc = doc.clone();
            let mut cache = self.lock();
            if cache.len() >= CACHED_QUERIES {
                cache.clear();
            }
            cache.insert(query, doc);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecutableDocument>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Refuses bracket nesting beyond [`MAX_NESTING`], skipping strings and comments.
pub fn prescan(query: &str) -> Result<(), &'static str> {
    let b = query.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(TOO_DEEP);
                }
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Checks depth and size of every operation, fragments inlined.
pub fn check(doc: &ExecutableDocument) -> Result<(), &'static str> {
    let mut walk = Walk {
        doc,
        memo: HashMap::new(),
        path: Vec::new(),
    };
    let mut nodes = 0usize;
    for (_, op) in doc.operations.iter() {
        let shape = walk.set(&op.node.selection_set.node)?;
        if shape.data > MAX_DEPTH || shape.intro > MAX_INTROSPECTION_DEPTH {
            return Err(TOO_DEEP);
        }
        nodes = nodes.saturating_add(shape.nodes);
        if nodes > MAX_NODES {
            return Err(TOO_LARGE);
        }
    }
    Ok(())
}

/// Of a selection set: the longest path of data fields, the longest path through an
/// introspection field (0 when none), and the selections it holds.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    data: usize,
    intro: usize,
    nodes: usize,
}

impl Shape {
    fn add(&mut self, data: usize, intro: usize, nodes: usize) {
        self.data = self.data.max(data);
        self.intro = self.intro.max(intro);
        self.nodes = self.nodes.saturating_add(nodes);
    }
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<&'a str, Shape>,
    /// Fragments being walked (a cycle is refused; validation would say so too).
    path: Vec<&'a str>,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Result<Shape, &'static str> {
        let mut shape = Shape::default();
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    let child = self.set(&f.node.selection_set.node)?;
                    let name = f.node.name.node.as_str();
                    if name == "__schema" || name == "__type" {
                        shape.add(0, 1 + child.data.max(child.intro), 1 + child.nodes);
                    } else {
                        let intro = if child.intro > 0 { 1 + child.intro } else { 0 };
                        shape.add(1 + child.data, intro, 1 + child.nodes);
                    }
                }
                Selection::InlineFragment(f) => {
                    let child = self.set(&f.node.selection_set.node)?;
                    shape.add(child.data, child.intro, 1 + child.nodes);
                }
                Selection::FragmentSpread(s) => {
                    let child = self.fragment(s.node.fragment_name.node.as_str())?;
                    shape.add(child.data, child.intro, 1 + child.nodes);
                }
            }
            if shape.nodes > MAX_NODES {
                return Err(TOO_LARGE);
            }
        }
        Ok(shape)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Shape, &'static str> {
        if let Some(shape) = self.memo.get(name) {
            return Ok(*shape);
        }
        let Some((key, def)) = self.doc.fragments.get_key_value(name) else {
            return Ok(Shape::default()); // unknown: validation reports it
        };
        if self.path.contains(&name) {
            return Err("Fragments must not form cycles.");
        }
        if self.path.len() >= MAX_NESTING {
            return Err(TOO_DEEP);
        }
        self.path.push(name);
        let shape = self.set(&def.node.selection_set.node)?;
        self.path.pop();
        self.memo.insert(key.as_str(), shape);
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    fn run(q: &str) -> Result<(), &'static str> {
        prescan(q)?;
        check(&parse_query(q).unwrap())
    }

    fn nested(levels: usize) -> String {
        let mut q = String::new();
        for _ in 0..levels - 1 {
            q.push_str("a {");
        }
        q.push('b');
        q.push_str(&"}".repeat(levels - 1));
        format!("{{ {q} }}")
    }

    #[test]
    fn depth_counts_every_field() {
        assert_eq!(run(&nested(10)), Ok(()));
        assert_eq!(run(&nested(11)), Err(TOO_DEEP));
        assert_eq!(run(&nested(50)), Err(TOO_DEEP));
        // through fragments too
        let inner = nested(11);
        let q = format!(
            "{{ ...F }} fragment F on Query {{ {} }}",
            &inner[1..inner.len() - 1]
        );
        assert_eq!(run(&q), Err(TOO_DEEP));
    }

    #[test]
    fn introspection_may_nest_ofs_deeper() {
        let mut t = String::from("kind");
        for _ in 0..9 {
            t = format!("kind ofType {{ {t} }}");
        }
        let q = format!("{{ __schema {{ types {{ fields {{ args {{ type {{ {t} }} }} }} }} }} }}");
        assert_eq!(run(&q), Ok(()));
        let q = format!("{{ customers {{ nodes {{ a {{ b {{ {t} }} }} }} }} }}");
        assert_eq!(run(&q), Err(TOO_DEEP));
    }

    #[test]
    fn fragment_bombs_and_cycles_are_refused_quickly() {
        let mut q = String::from("{ ...F0 }\n");
        for i in 0..40 {
            q.push_str(&format!(
                "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
                n = i + 1
            ));
        }
        q.push_str("fragment F40 on Query { a }\n");
        assert_eq!(run(&q), Err(TOO_LARGE));
        let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert!(run(cycle).is_err());
    }

    #[test]
    fn documents_are_remembered_only_when_accepted() {
        let docs = Documents::default();
        for _ in 0..2 {
            docs.prepare(&mut Request::new("{ a }")).unwrap();
            let refused = docs.prepare(&mut Request::new(nested(11))).unwrap_err();
            assert_eq!(refused.message, TOO_DEEP);
        }
        assert_eq!(docs.lock().len(), 1);
        let syntax = docs.prepare(&mut Request::new("{ a")).unwrap_err();
        assert!(syntax.message.contains("expected"), "{}", syntax.message);
    }

    #[test]
    fn prescan_ignores_brackets_in_strings_and_comments() {
        let q = format!(
            "{{ a(x: \"{}\", y: \"\"\"{}\"\"\") # {}\n }}",
            "{".repeat(100),
            "[".repeat(100),
            "(".repeat(100)
        );
        assert_eq!(prescan(&q), Ok(()));
        assert_eq!(prescan(&"{".repeat(65)), Err(TOO_DEEP));
        assert_eq!(prescan(&"[".repeat(10_000)), Err(TOO_DEEP));
    }
}
