//! The modules of `refsys-core` form layers: no module uses a module that uses it back,
//! directly or through others, and uses through the crate root's re-exports count as uses of
//! the module that defines the item. Checked on the source text, for whole top-level modules
//! (`http`, `service`, ...) and for every submodule (`http::routes`, ...).
//!
//! A hand-written reader rather than a tool such as `cargo-modules`: this needs only the
//! `use crate::` / `crate::` / `super::` paths of code written in one style, and it runs
//! with `cargo test`, with nothing to install.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/`, by path (`""` is the crate root), with its source text.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let join = |name: &str| {
                if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}::{name}")
                }
            };
            if path.is_dir() {
                walk(&path, &join(&name), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "lib" => String::new(),
                    "mod" => prefix.to_owned(),
                    _ => join(&name),
                };
                out.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut out,
    );
    out
}

/// The code of a module: no unit-test module, no comments, and string literals blanked out
/// (so a `use` or `//` inside one is not read as code).
fn code(source: &str) -> String {
    let source = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut out = String::with_capacity(source.len());
    let (mut in_string, mut in_comment, mut escaped) = (false, false, false);
    let mut chars = source.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
        } else if c == '/' && chars.peek() == Some(&'/') {
            in_comment = true;
        } else if c == '"' && !(previous == '\'' && chars.peek() == Some(&'\'')) {
            in_string = true;
        }
        let blank = (in_string || in_comment) && c != '\n';
        out.push(if blank { ' ' } else { c });
        previous = c;
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (head, rest) = (&tree[..open], &tree[open + 1..tree.len() - 1]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&rest[start..]);
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .flat_map(|part| expand(&format!("{head}{part}")))
        .collect()
}

/// Every path a module names, made absolute (`crate::a::b`), from its `use` statements and
/// from `crate::` and `super::` paths in its code. A `use` path that starts with the name
/// of a child module (`use handle::X` in `http`) is relative to the module.
fn paths(module: &str, code: &str, modules: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let this: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let absolute = |path: &str| -> Option<Vec<String>> {
        let mut segments: Vec<&str> = path.split("::").collect();
        let first = *segments.first()?;
        let mut base: Vec<&str> = match first {
            "crate" => Vec::new(),
            "super" | "self" => this.clone(),
            child => {
                let mut child_path = this.clone();
                child_path.push(child);
                if !modules.contains_key(&child_path.join("::")) {
                    return None;
                }
                segments.insert(0, "self");
                this.clone()
            }
        };
        segments.remove(0);
        while segments.first() == Some(&"super") {
            segments.remove(0);
            base.pop();
        }
        if path.starts_with("super") {
            base.pop();
        }
        base.extend(segments.iter().filter(|s| !s.is_empty() && **s != "self"));
        Some(base.into_iter().map(str::to_owned).collect())
    };
    let starts_a_word = |at: usize| {
        code[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'))
    };
    let mut found = Vec::new();
    for (at, _) in code
        .match_indices("use ")
        .filter(|(at, _)| starts_a_word(*at))
    {
        let statement = &code[at + 4..];
        let end = statement.find(';').unwrap_or(statement.len());
        for path in expand(&statement[..end]) {
            let path = path.split(" as ").next().unwrap_or_default().to_owned();
            found.extend(absolute(&path));
        }
    }
    for prefix in ["crate::", "super::"] {
        for (at, _) in code
            .match_indices(prefix)
            .filter(|(at, _)| starts_a_word(*at))
        {
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.extend(absolute(path.trim_end_matches(':')));
        }
    }
    found
}

/// The module each name the crate root re-exports comes from.
fn root_exports(modules: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    for path in paths("", &code(&modules[""]), modules) {
        if let Some(defining) = module_of(&path, modules, &BTreeMap::new()) {
            exports.insert(path.last().unwrap().clone(), defining);
        }
    }
    exports
}

/// The module a path points into: its longest prefix that is a module, or for a name the
/// root re-exports, the module that defines it. `None` for the root itself (macros).
fn module_of(
    path: &[String],
    modules: &BTreeMap<String, String>,
    exports: &BTreeMap<String, String>,
) -> Option<String> {
    let mut best = None;
    for len in 1..=path.len() {
        let candidate = path[..len].join("::");
        if modules.contains_key(&candidate) {
            best = Some(candidate);
        }
    }
    best.or_else(|| path.first().and_then(|name| exports.get(name).cloned()))
}

/// The use graph of `modules`: module → the modules it uses, at the granularity `granule`
/// maps to.
fn graph(
    modules: &BTreeMap<String, String>,
    granule: impl Fn(&str) -> String,
) -> BTreeMap<String, BTreeSet<String>> {
    let exports = root_exports(modules);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, source) in modules {
        if module.is_empty() {
            continue;
        }
        for path in paths(module, &code(source), modules) {
            let Some(target) = module_of(&path, modules, &exports) else {
                continue;
            };
            let (from, to) = (granule(module), granule(&target));
            if from != to && !to.is_empty() {
                graph.entry(from).or_default().insert(to);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The top-level module a module belongs to.
fn top_level(module: &str) -> String {
    module.split("::").next().unwrap_or_default().to_owned()
}

#[test]
fn top_level_modules_use_each_other_without_cycles() {
    let graph = graph(&modules(), top_level);
    assert!(
        graph.contains_key("service") && graph.contains_key("http"),
        "{graph:?}"
    );
    assert!(graph["http"].contains("service"), "{graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!("modules use each other: {}", found.join(" → "));
    }
}

#[test]
fn submodules_use_each_other_without_cycles() {
    let graph = graph(&modules(), str::to_owned);
    assert!(graph["http::handle"].contains("http::routes"), "{graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!("modules use each other: {}", found.join(" → "));
    }
}

#[test]
fn the_reader_finds_cycles_through_re_exports_super_and_child_modules() {
    let source = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(module, code)| ((*module).to_owned(), (*code).to_owned()))
            .collect()
    };
    // `service` uses `http`; `http` uses `ReferralService` through the root's re-export.
    let through_root = source(&[
        (
            "",
            "pub use service::ReferralService;\nmod http;\nmod service;",
        ),
        (
            "http",
            "use crate::ReferralService; // a comment: use crate::nothing;",
        ),
        (
            "service",
            "fn f() { let url = \"http://x\"; crate::http::handle(url); }",
        ),
    ]);
    let found = cycle(&graph(&through_root, top_level)).expect("a cycle");
    assert!(found.contains(&"http".to_owned()) && found.contains(&"service".to_owned()));
    // A child uses its parent's item through `super::`, and the parent re-exports the child.
    let parent_child = source(&[
        ("", "mod memory;"),
        (
            "memory",
            "mod otp;\npub use otp::MemoryOtpStore;\npub const SWEEP: u64 = 1;",
        ),
        ("memory::otp", "fn f() -> u64 { super::SWEEP }"),
    ]);
    assert!(cycle(&graph(&parent_child, str::to_owned)).is_some());
    // No cycle: words that contain `use` and comments are not uses.
    let clean = source(&[
        ("", "mod a;\nmod b;"),
        (
            "a",
            "use crate::b::X; // then b may reuse nothing: use crate::a;",
        ),
        ("b", "fn reuse () {} const S: &str = \"// use crate::a;\";"),
    ]);
    assert_eq!(cycle(&graph(&clean, str::to_owned)), None);
    assert_eq!(
        expand("crate::{a::{B, C}, D}"),
        ["crate::a::B", "crate::a::C", "crate::D"]
    );
}
