//! The crate's layers, held: every `crate::` path in non-test code of a top-level module
//! (`src/<m>.rs` or `src/<m>/`) names a module of a lower rank, or itself; and there is no
//! import cycle between top-level modules. The ranks are the map in `src/lib.rs`.
//!
//! Std only: reads `src/**/*.rs`, strips comments, string literals and `#[cfg(test)]` modules
//! (unit tests may reach anywhere), then collects `crate::x` and `crate::{x, y::…}`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom; a module may use those below it (a higher index) and itself.
const LAYERS: &[&[&str]] = &[
    &["daemon"],
    &["privsep", "submit"],
    &["runner", "inbound", "exporter"],
    &["runtime"],
    &["policy", "receive", "milter"],
    &["deliver"],
    &["smtp"],
    &["rules", "credentials", "makemap"],
    &[
        "cli", "tls", "dns", "aliases", "stats", "listener", "version",
    ],
    &["config", "auth", "queue"],
    &[
        "sysexits",
        "log",
        "hosts",
        "rlimit",
        "priority",
        "shutdown",
        "mapdb",
        "headers",
        "mailbox",
        "asuser",
        "setgid",
        "conncontrol",
        "metrics",
    ],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Comments, string and char literals blanked; cut at the first `#[cfg(test)]` module.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) {
            // raw string r"…" / r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || (b.get(i + 1) == Some(&b'\\')))
        {
            // a char literal ('x', '\n', '\''); lifetimes ('a) are left alone
            let mut j = i + 1;
            if b[j] == b'\\' {
                j += 1;
            }
            j += 1;
            while j < b.len() && b[j] != b'\'' {
                j += 1;
            }
            i = j + 1;
            out.push_str("' '");
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    let mut from = 0;
    while let Some(k) = out[from..].find("#[cfg(test)]") {
        let at = from + k;
        let after = out[at + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod ") {
            out.truncate(at);
            break;
        }
        from = at + 1;
    }
    out
}

/// Every top-level module named after `crate::` in `code`: `crate::x` and each first
/// segment inside `crate::{…}`.
fn referenced(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `sendmail_rs_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[k..]);
                        if !name.is_empty() && name != "self" {
                            found.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "tests") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs")
            && p.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(p);
        }
    }
}

/// module -> (used module -> first place it is used)
fn edges() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Only modules count: `crate::VERSION` and the like are items of lib.rs itself.
    let is_module = |m: &str| src.join(format!("{m}.rs")).is_file() || src.join(m).is_dir();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if rel == "lib.rs" || rel == "main.rs" {
            continue;
        }
        let me = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let code = strip(&std::fs::read_to_string(&f).unwrap());
        for (n, line) in code.lines().enumerate() {
            for other in referenced(line) {
                if other != me && is_module(&other) {
                    edges
                        .entry(me.clone())
                        .or_default()
                        .entry(other)
                        .or_insert_with(|| format!("src/{rel}:{}", n + 1));
                }
            }
        }
        // grouped imports spanning lines
        for other in referenced(&code) {
            if other != me && is_module(&other) {
                edges
                    .entry(me.clone())
                    .or_default()
                    .entry(other)
                    .or_insert_with(|| format!("src/{rel}"));
            }
        }
    }
    edges
}

#[test]
fn every_import_points_down_the_layers() {
    let mut wrong = Vec::new();
    let mut unknown = BTreeSet::new();
    for (from, uses) in edges() {
        let Some(rf) = rank(&from) else {
            unknown.insert(from.clone());
            continue;
        };
        for (to, at) in uses {
            match rank(&to) {
                None => {
                    unknown.insert(to.clone());
                }
                Some(rt) if rt <= rf => wrong.push(format!("{from} -> {to} ({at})")),
                Some(_) => {}
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from the layer table in tests/layers.rs (and src/lib.rs's map): {unknown:?}"
    );
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways in the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let edges = edges();
    // Depth-first search for a back edge; reports one cycle with its path.
    fn visit(
        v: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(v.to_string(), 1);
        path.push(v.to_string());
        for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
            match state.get(w.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == w).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(w.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(w, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(v.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for v in edges.keys() {
        if !state.contains_key(v.as_str()) {
            let mut path = Vec::new();
            if let Some(c) = visit(v, &edges, &mut state, &mut path) {
                panic!("import cycle: {}", c.join(" -> "));
            }
        }
    }
}

#[test]
fn the_checker_sees_grouped_and_plain_paths_and_ignores_comments_and_strings() {
    let code = strip(
        "use crate::{a::X, b, self};\n// crate::c\nlet s = \"crate::d\";\nuse crate::e::f;\n/* crate::g */\n#[cfg(test)]\nmod tests { use crate::h; }\n",
    );
    let got: Vec<String> = referenced(&code).into_iter().collect();
    assert_eq!(got, ["a", "b", "e"]);
    assert_eq!(rank("daemon"), Some(0));
    assert!(rank("queue") > rank("runner"));
}
