//! Layers inside a crate: the modules of `session-server` import one way,
//! with no cycle among them (ARCHITECTURE.md gives the order). Checked on
//! the source text: every `crate::<module>` a module's files name (its own
//! file and the files of its submodules) is an edge; a strongly connected
//! set of more than one module is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// The crates whose modules must not import each other in a circle.
const LAYERED: &[&str] = &["crates/session-server/src"];

/// Checks every crate of [`LAYERED`]; an error lists each cycle found.
pub(crate) fn check() -> Result<()> {
    let cycles = workspace_cycles()?;
    if cycles.is_empty() {
        eprintln!("module layers: ok");
        return Ok(());
    }
    for cycle in &cycles {
        eprintln!("  - {cycle}");
    }
    bail!(
        "module-layer check: {} import cycle(s), listed above",
        cycles.len()
    )
}

/// Every import cycle among the modules of the [`LAYERED`] crates, as
/// `<crate dir>: a, b, c`.
fn workspace_cycles() -> Result<Vec<String>> {
    let mut found = Vec::new();
    for dir in LAYERED {
        let graph = module_graph(&cmd::root().join(dir))?;
        for cycle in cycles(&graph) {
            found.push(format!("{dir}: {}", cycle.join(", ")));
        }
    }
    Ok(found)
}

/// The crate's top-level modules (the `.rs` files beside `lib.rs`, with
/// their submodules' directories) and the other modules each names.
fn module_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if matches!(name, "lib" | "main") {
            continue;
        }
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            read_tree(&path, texts.entry(name.to_owned()).or_default())?;
        }
    }
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    Ok(texts
        .iter()
        .map(|(module, text)| {
            let deps = named_modules(text)
                .into_iter()
                .filter(|dep| dep != module && modules.contains(dep))
                .collect();
            (module.clone(), deps)
        })
        .collect())
}

/// Appends the text of `path` (a file, or every `.rs` file under a
/// directory) to `text`.
fn read_tree(path: &Path, text: &mut String) -> Result<()> {
    if path.is_dir() {
        for entry in fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            read_tree(&entry?.path(), text)?;
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        text.push_str(
            &fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        text.push('\n');
    }
    Ok(())
}

/// The first path segment after each `crate::` in `text`, including each
/// item of a `crate::{a, b::c}` group.
fn named_modules(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// The strongly connected sets of more than one module (Tarjan), each
/// sorted, in a stable order.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, module: &'a str) {
            let n = self.index.len();
            self.index.insert(module, n);
            self.low.insert(module, n);
            self.stack.push(module);
            self.on_stack.insert(module);
            for dep in self.graph.get(module).into_iter().flatten() {
                let dep = dep.as_str();
                if !self.index.contains_key(dep) {
                    self.visit(dep);
                    let low = self.low[module].min(self.low[dep]);
                    self.low.insert(module, low);
                } else if self.on_stack.contains(dep) {
                    let low = self.low[module].min(self.index[dep]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut set = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    set.push(top.to_owned());
                    if top == module {
                        break;
                    }
                }
                if set.len() > 1 {
                    set.sort();
                    self.found.push(set);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for module in graph.keys() {
        if !walk.index.contains_key(module.as_str()) {
            walk.visit(module);
        }
    }
    walk.found.sort();
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(from, to)| {
                (
                    (*from).to_owned(),
                    to.iter().map(|t| (*t).to_owned()).collect(),
                )
            })
            .collect()
    }

    /// The rule on this workspace itself, so that `cargo test` breaks as
    /// soon as two of the server's modules import each other in a circle.
    #[test]
    fn the_servers_modules_import_one_way() {
        assert_eq!(workspace_cycles().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn modules_named_in_paths_and_groups_are_found() {
        let text = "use crate::state::AppState;\n\
                    use crate::{error::ApiError, wire::{no_store, Timestamp}, telemetry};\n\
                    let x = crate::app::serve(); // and crate::ui in a comment\n";
        assert_eq!(
            named_modules(text),
            ["app", "error", "state", "telemetry", "ui", "wire"]
                .map(str::to_owned)
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn layers_that_point_one_way_have_no_cycle() {
        let g = graph(&[
            ("app", &["admin", "public"]),
            ("admin", &["wire", "state"]),
            ("public", &["wire", "state"]),
            ("wire", &["state"]),
            ("state", &[]),
        ]);
        assert_eq!(cycles(&g), Vec::<Vec<String>>::new());
    }

    #[test]
    fn every_cycle_is_reported_with_its_members() {
        let g = graph(&[
            ("admin", &["public", "openapi"]),
            ("openapi", &["admin"]),
            ("public", &["app"]),
            ("app", &["admin"]),
            ("keyring", &["master"]),
            ("master", &["keyring"]),
            ("state", &["keyring"]),
        ]);
        assert_eq!(
            cycles(&g),
            [
                vec!["admin", "app", "openapi", "public"],
                vec!["keyring", "master"]
            ]
        );
    }
}
