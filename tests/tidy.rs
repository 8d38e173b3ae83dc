//! The architecture's invariants, stated as absences and checked on the source.

use std::path::Path;

fn sources(dir: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    // A renamed path would otherwise make its check pass on nothing.
    assert!(root.exists(), "{dir} does not exist: update this test");
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    out
}

/// Lines of code, without comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

fn assert_absent(dir: &str, words: &[&str], invariant: &str) {
    let mut found = vec![];
    for (path, text) in sources(dir) {
        for (n, line) in code_lines(&text) {
            for w in words {
                if line.contains(w) {
                    found.push(format!("{path}:{}: `{w}`", n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "{invariant}, but:\n{}", found.join("\n"));
}

#[test]
fn the_domain_does_no_io_reads_no_clock_and_draws_no_randomness() {
    assert_absent(
        "src/domain",
        &[
            "tokio",
            "sled",
            "tonic",
            "prost",
            "std::fs",
            "std::net",
            "SystemTime",
            "Instant::now",
            "getrandom",
            "rand::",
        ],
        "the domain never does I/O, never reads the clock and never draws random numbers",
    );
}

#[test]
fn money_is_never_a_float() {
    assert_absent("src/domain", &["f32", "f64"], "money is integer cents");
    assert_absent(
        "src/client",
        &["f32", "f64"],
        "money is integer cents, in display too",
    );
}

#[test]
fn only_rpc_and_the_cli_know_protobuf() {
    for dir in [
        "src/domain",
        "src/storage",
        "src/engine",
        "src/code.rs",
        "src/render.rs",
    ] {
        assert_absent(
            dir,
            &["prost", "tonic", "pb::"],
            "only rpc (and the CLI) knows protobuf",
        );
    }
}

#[test]
fn only_storage_knows_sled() {
    for dir in [
        "src/domain",
        "src/rpc",
        "src/engine",
        "src/server.rs",
        "src/client",
    ] {
        assert_absent(dir, &["sled::"], "only storage knows sled");
    }
}

#[test]
fn every_file_says_what_it_is_for() {
    for (path, text) in sources("src")
        .into_iter()
        .chain(sources("tests"))
        .chain(sources("benches"))
    {
        assert!(
            text.starts_with("//!"),
            "{path} opens with a `//!` line on what it is for"
        );
    }
}
