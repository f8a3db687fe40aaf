//! The documents hold together and follow the code:
//! - every relative link of README.md, ARCHITECTURE.md and `docs/*.md` points to a file
//!   that exists and, with a `#fragment`, to a heading of that file, under the anchor
//!   rules of both GitHub and GitLab (lower case, punctuation dropped, spaces to `-`;
//!   GitLab also folds runs of `-`);
//! - every name ARCHITECTURE.md's record walk writes as a code span (`name`,
//!   `Type::method`, `module::function`) exists under `crates/` or `tools/`: a lower-case
//!   name as `fn name`, a capitalised one as a type (or an enum variant), so a rename
//!   cannot leave the walk describing a path that is gone.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The heading of the section whose function names are checked.
const WALK: &str = "## The path of one record, from poll to commit";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// README.md, ARCHITECTURE.md, then `docs/*.md` in name order.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let mut all = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    all.extend(docs);
    all
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The lines outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// `line` without its code spans (a link inside backticks is no link).
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// A heading's anchor as GitHub makes it: lower case, every character that is not a
/// letter, a digit, `-`, `_` or a space dropped, spaces turned into `-`. GitLab also
/// folds a run of `-` into one (`fold`).
fn anchor(heading: &str, fold: bool) -> String {
    let mut out = String::new();
    for c in heading.trim().to_lowercase().chars() {
        let c = match c {
            ' ' => '-',
            c if c.is_alphanumeric() || c == '-' || c == '_' => c,
            _ => continue,
        };
        if fold && c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out
}

/// The anchors of `text`'s headings under one rule, a repeated heading numbered as both
/// hosts number it (`name`, `name-1`, …).
fn anchors(text: &str, fold: bool) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(&line[hashes..], fold);
        let n = seen.entry(base.clone()).or_default();
        out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of the inline links and images of `text`, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find([')', ' ']).unwrap_or(rest.len());
            out.push((number, rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    out
}

/// Every broken relative link of `doc`, as `doc:line: target: why`.
fn broken_links(doc: &Path) -> Vec<String> {
    let text = read(doc);
    let dir = doc.parent().expect("a document has a directory");
    let mut broken = Vec::new();
    for (number, target) in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let at = format!("{}:{number}: {target}", shown(doc));
        let (path, fragment) = match target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            doc.to_path_buf()
        } else {
            dir.join(path)
        };
        if !file.exists() {
            broken.push(format!("{at}: no such file"));
            continue;
        }
        let Some(fragment) = fragment else {
            continue;
        };
        if file.extension().is_none_or(|e| e != "md") {
            broken.push(format!("{at}: a fragment into a file that is not Markdown"));
            continue;
        }
        let target_text = read(&file);
        for (host, fold) in [("GitHub", false), ("GitLab", true)] {
            if !anchors(&target_text, fold).contains(fragment) {
                broken.push(format!(
                    "{at}: {} has no heading with the {host} anchor #{fragment}",
                    shown(&file)
                ));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_of_the_documents_points_to_a_file_and_heading_that_exist() {
    let docs = documents();
    assert!(
        docs.len() >= 4,
        "README.md, ARCHITECTURE.md and docs/*.md: {docs:?}"
    );
    let count: usize = docs.iter().map(|d| links(&read(d)).len()).sum();
    assert!(
        count >= 50,
        "only {count} links found: is the link parser blind?"
    );
    let broken: Vec<String> = docs.iter().flat_map(|d| broken_links(d)).collect();
    assert!(
        broken.is_empty(),
        "broken links (a moved section needs its links pointed at its new document):\n{}",
        broken.join("\n")
    );
}

#[test]
fn anchors_follow_the_hosts_rules() {
    let text = "# The assignment's questions\n## vCPU and memory, justified\n\
                ```sh\n# not a heading\n```\n## Notes\n## Notes\n### `LeafsyncJobDown`\n\
                ## Scripts — and CI\n";
    let github = anchors(text, false);
    for a in [
        "the-assignments-questions",
        "vcpu-and-memory-justified",
        "notes",
        "notes-1",
        "leafsyncjobdown",
        "scripts--and-ci",
    ] {
        assert!(github.contains(a), "{a} in {github:?}");
    }
    assert!(!github.contains("not-a-heading"));
    assert!(anchors(text, true).contains("scripts-and-ci"));
    assert_eq!(
        links("see [a](b.md#c) and `[no](link)`, ![img](d/e.png)"),
        [
            (1_usize, "b.md#c".to_owned()),
            (1_usize, "d/e.png".to_owned())
        ]
    );
}

/// Every `.rs` file under `crates/` and `tools/`, concatenated.
fn sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&read(&path));
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    for dir in ["crates", "tools"] {
        walk(&root().join(dir), &mut out);
    }
    out
}

/// `s` as Rust path segments (`name`, `Type::method`, `module::function`), if it is one.
fn rust_path(s: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = s.split("::").collect();
    segments
        .iter()
        .all(|seg| {
            let mut chars = seg.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .then_some(segments)
}

/// Whether `sources` defines `name`: a function for a lower-case name, a type or an enum
/// variant for a capitalised one.
fn defined(sources: &str, name: &str) -> bool {
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        let item = ["struct", "enum", "trait", "type"].iter().any(|kind| {
            [" ", "<", "(", ";"]
                .iter()
                .any(|end| sources.contains(&format!("{kind} {name}{end}")))
        });
        let variant = sources.lines().any(|line| {
            let line = line.trim_start();
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '(', ',']))
        });
        item || variant
    } else {
        sources.contains(&format!("fn {name}(")) || sources.contains(&format!("fn {name}<"))
    }
}

/// The Rust paths ARCHITECTURE.md's record walk writes as code spans.
fn walk_names() -> Vec<String> {
    let text = read(&root().join("ARCHITECTURE.md"));
    let section = text
        .split_once(&format!("\n{WALK}\n"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no '{WALK}' section"))
        .1;
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut names: Vec<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| rust_path(span).is_some())
        .map(str::to_owned)
        .collect();
    names.dedup();
    names
}

/// The walk's names that the code does not define (each segment checked: the last as a
/// function or a type, the ones before it when capitalised as types).
fn undefined(names: &[String], sources: &str) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            let segments = rust_path(name).expect("a Rust path");
            let (last, before) = segments.split_last().expect("at least one segment");
            !defined(sources, last)
                || before.iter().any(|seg| {
                    seg.starts_with(|c: char| c.is_ascii_uppercase()) && !defined(sources, seg)
                })
        })
        .cloned()
        .collect()
}

#[test]
fn every_function_the_record_walk_names_exists() {
    let names = walk_names();
    let functions = names
        .iter()
        .filter(|n| {
            rust_path(n)
                .and_then(|s| s.last().copied())
                .is_some_and(|last| last.starts_with(|c: char| c.is_ascii_lowercase()))
        })
        .count();
    assert!(
        functions >= 40,
        "the record walk names only {functions} functions: {names:?}"
    );
    let sources = sources();
    let missing = undefined(&names, &sources);
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's '{WALK}' names what the code does not define (renamed? misspelt?): {missing:?}"
    );
    // The check itself: a misspelt function, type or variant is caught.
    let misspelt = [
        "Job::proces",
        "Jb::run",
        "WriteOutcom",
        "commit_stored_offset",
    ]
    .map(str::to_owned);
    assert_eq!(undefined(&misspelt, &sources), misspelt);
}
