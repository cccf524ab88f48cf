//! The fuzz targets of fuzz/ (bodies in `strata::fuzzing`), run in CI without libFuzzer: each over
//! its committed seed corpus, then over up to a few thousand mutations of it from a seeded PRNG
//! (byte flips, insertions of bytes and of tokens that broke parsers before, deletions,
//! duplications, splices of two corpus entries), for at most a few seconds. The inputs come in
//! the same order on every run; a slower machine gets through fewer of them. An input that panics
//! fails the test, printed escaped and saved under target/fuzz-failures/ for
//! `cargo fuzz run <target> <file>` or a unit test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Mutations per target, on top of the seeds.
const MUTATIONS: usize = 3000;

/// Time per target after which no further mutation is tried (debug builds render slowly: the
/// repository target gets through a few hundred inputs in this time on two cores).
const BUDGET: std::time::Duration = std::time::Duration::from_secs(4);

/// Bytes that broke or nearly broke a parser somewhere: multi-byte characters, numbers past
/// every integer type, separators of the formats strata reads.
const TOKENS: &[&[u8]] = &[
    "é".as_bytes(),
    "\u{308}".as_bytes(),
    "\u{a0}".as_bytes(),
    b"\xff",
    b"\0",
    b"99999999999999999999",
    b"-9223372036854775808",
    b"18446744073709551616",
    b"24:00",
    b"-",
    b":",
    b",",
    b"+",
    b"\n>>> ",
    b"\n\n",
    b"{{",
    b"}}",
    b"{%",
    b"%}",
    b"*a",
    b"&a ",
    b"..",
    b"/",
    b" -> ",
    b"<",
    b">; rel=\"next\"",
    b"sha256=",
    b"h",
    b"ms",
];

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn mutate(rng: &mut fastrand::Rng, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut data = seeds[rng.usize(..seeds.len())].1.clone();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(..=data.len());
        match rng.u8(..6) {
            0 if !data.is_empty() => {
                let i = rng.usize(..data.len());
                data[i] ^= 1 << rng.u8(..8);
            }
            1 => data.insert(at, rng.u8(..)),
            2 => {
                let token = TOKENS[rng.usize(..TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 if !data.is_empty() => {
                let end = (at + rng.usize(1..=16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            4 if !data.is_empty() => {
                let start = rng.usize(..data.len());
                let end = (start + rng.usize(1..=32)).min(data.len());
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            _ => {
                let other = &seeds[rng.usize(..seeds.len())].1;
                let from = rng.usize(..=other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
        }
    }
    data
}

fn save(target: &str, data: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let hash = data.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3));
    let path = dir.join(format!("{target}-{hash:016x}"));
    std::fs::write(&path, data).unwrap();
    path
}

thread_local! {
    /// Set while a target runs: its panics (expected ones that strata catches itself, and the
    /// failure this test reports) are recorded here instead of printed.
    static IN_TARGET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn quiet_panics_in_targets() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TARGET.get() {
                LAST_PANIC.with_borrow_mut(|last| *last = info.to_string());
            } else {
                default(info);
            }
        }));
    });
}

fn run(target: &str) {
    quiet_panics_in_targets();
    let body = strata::fuzzing::TARGETS.iter().find(|(name, _)| *name == target).expect("a target").1;
    let seeds = corpus(target);
    let mut rng = fastrand::Rng::with_seed(0x5eed ^ target.len() as u64);
    let inputs = seeds.iter().map(|(_, data)| data.clone()).chain((0..MUTATIONS).map(|_| mutate(&mut rng, &seeds)));
    let started = std::time::Instant::now();
    let mut ran = 0;
    for (i, data) in inputs.enumerate() {
        if i >= seeds.len() && started.elapsed() > BUDGET {
            break;
        }
        ran += 1;
        IN_TARGET.set(true);
        let outcome = catch_unwind(AssertUnwindSafe(|| body(&data)));
        IN_TARGET.set(false);
        if outcome.is_err() {
            let saved = save(target, &data);
            panic!(
                "fuzz target `{target}` panicked on input {i}, saved as {}:\n{}\n\n{}",
                saved.display(),
                data.escape_ascii(),
                LAST_PANIC.with_borrow(String::clone)
            );
        }
    }
    eprintln!("fuzz target `{target}`: {ran} inputs in {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn repo() {
    run("repo");
}

#[test]
fn window() {
    run("window");
}

#[test]
fn template() {
    run("template");
}

#[test]
fn config() {
    run("config");
}

#[test]
fn webhook() {
    run("webhook");
}

#[test]
fn forge() {
    run("forge");
}

#[test]
fn every_target_is_run_here_and_has_a_cargo_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
    let here = std::fs::read_to_string(root.join("tests/it/fuzz.rs")).unwrap();
    for (name, _) in strata::fuzzing::TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] {name}");
        assert!(root.join(format!("fuzz/fuzz_targets/{name}.rs")).exists(), "no fuzz/fuzz_targets/{name}.rs");
        assert!(here.contains(&format!("run(\"{name}\")")), "tests/it/fuzz.rs does not run {name}");
    }
}

/// The repository seeds are what they claim to be: the example loads in memory as it does from
/// disk, and the symlinks of another seed are symlinks (out of the tree: refused).
#[test]
fn the_repository_seeds_load_in_memory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = strata::fuzzing::repo_tree(&std::fs::read(root.join("fuzz/corpus/repo/example")).unwrap());
    let model = strata::repo::load(&example).unwrap();
    assert_eq!(model.clusters.keys().collect::<Vec<_>>(), ["aws-cluster", "aws-staging", "edge-berlin", "edge-lab"]);
    let tools = strata::render::tools::SystemTools::default();
    let set = strata::render::Renderer::new(&example, &model, &tools).render(&model.clusters["aws-cluster"]).unwrap();
    assert_eq!(set.object_count(), 3);
    let layers = strata::fuzzing::repo_tree(&std::fs::read(root.join("fuzz/corpus/repo/layers")).unwrap());
    let e = strata::source::read_file(&layers, "packs/link/passwd").unwrap_err();
    assert!(e.to_string().contains("points outside the repository"), "{e}");
    assert!(strata::source::read_file(&layers, "packs/loop").unwrap_err().to_string().contains("symbolic links"));
}
