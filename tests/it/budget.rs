//! Output amplification: a repository that renders far more than any real one stops at a budget
//! with `error[budget]` naming the layer and the file, and strata's memory stays bounded while it
//! does (peak RSS of the process and of the child that renders templates, from getrusage).

use crate::common;

use common::Repo;

const MIB: i64 = 1024 * 1024;

/// The largest peak RSS of any child process this test binary has waited for, in bytes.
fn children_peak_rss() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    usage.ru_maxrss * 1024
}

#[track_caller]
fn over_budget(repo: &Repo, expected: &[&str]) {
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    for fragment in expected {
        assert!(run.stderr.contains(fragment), "expected {fragment:?} in:\n{}", run.stderr);
    }
    let peak = children_peak_rss();
    let bound = memory_bound();
    assert!(peak < bound, "peak RSS {} MiB, more than the {} MiB bound", peak / MIB, bound / MIB);
}

/// What a hostile repository may make one `strata` process hold: a base, plus for each thread
/// rendering templates at once what fuel lets one template build (minijinja charges a fuel unit
/// per 64 bytes: up to 128 MB of values out of 2,000,000 units, and the copy an operation makes
/// of its input while it runs). strata renders on a thread per core (`RAYON_NUM_THREADS` caps
/// it); measured on 2 cores: 377–473 MiB for a string grown by `replace`.
fn memory_bound() -> i64 {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i64));
    160 * MIB + threads * 256 * MIB
}

/// Two thousand small templates that each write 2 MB: 4 GB if nothing stopped them.
#[test]
fn many_templates_writing_megabytes_stop_at_the_layer_budget() {
    let repo = Repo::plain_example();
    for i in 0..2000 {
        repo.write(
            &format!("packs/hello-universe/manifests/amp-{i:04}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: amp-{i} }}\ndata: {{ x: '{{{{ \"x\" * 2000000 }}}}' }}\n"),
        );
    }
    over_budget(
        &repo,
        &[
            "error[budget]: packs/hello-universe/manifests/amp-",
            "profile aws-profile@1.0.0 layer hello-universe: the layer's templates render to more than 32 MiB together",
        ],
    );
}

#[test]
fn one_template_writing_or_building_too_much_is_stopped() {
    let repo = Repo::plain_example();
    repo.write(
        "packs/hello-universe/manifests/loop.yaml",
        "{% for i in range(100) %}---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: 'l{{ i }}' }\ndata: { x: '{{ \"y\" * 1000000 }}' }\n{% endfor %}",
    );
    over_budget(
        &repo,
        &[
            "error[budget]: packs/hello-universe/manifests/loop.yaml: profile aws-profile@1.0.0 layer hello-universe: the template renders to more than 8 MiB",
        ],
    );
    // Strings and lists built up without being written: minijinja charges fuel for the data
    // operations create (64 bytes a fuel, so 128 MB for a template's 2,000,000) and checks an
    // allocation of known size before making it.
    for body in [
        "{{ (\"x\" * 200000000) | length }}",
        "{% set a = \"x\" * 1000000 %}{% for i in range(9) %}{% set a = a ~ a %}{% endfor %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}{% set e = d ~ d %}{% set f = e ~ e %}{% set g = f ~ f %}{% set h = g ~ g %}{% set i = h ~ h %}{{ i | length }}",
        "{% set ns = namespace(l=[]) %}{% for i in range(5000) %}{% set ns.l = ns.l + [(\"x\" * 1000000) ~ i] %}{% endfor %}{{ ns.l | length }}",
        "{% set ns = namespace(s=\"xxxxxxxxxx\") %}{% for i in range(12) %}{% set ns.s = ns.s | replace(\"x\", \"xxxxxxxxxx\") %}{% endfor %}{{ ns.s | length }}",
    ] {
        let repo = Repo::plain_example();
        repo.write(
            "packs/hello-universe/manifests/grow.yaml",
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: g }}\ndata: {{ n: '{body}' }}\n"),
        );
        over_budget(
            &repo,
            &[
                "error[template]: packs/hello-universe/manifests/grow.yaml:4: profile aws-profile@1.0.0 layer hello-universe: template ran past its budget of 2000000 steps",
            ],
        );
    }
}

/// A kustomize layer whose output passes the layer budget: kustomize is stopped.
#[test]
fn a_tool_rendering_too_much_is_stopped() {
    let repo = Repo::plain_example();
    repo.write(
        "profiles/big/1.0.0/profile.yaml",
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: big, version: 1.0.0 }\nspec:\n  layers:\n    - { name: big, type: kustomize, source: packs/big }\n",
    )
    .write("clusters/big.yaml", "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: big }\nspec:\n  profile: { name: big, version: 1.0.0 }\n");
    // 12 files of 3 MB, each read by kustomize: 36 MB of output.
    let mut resources = Vec::new();
    for i in 0..12 {
        let file = format!("cm-{i}.yaml");
        repo.write(
            &format!("packs/big/{file}"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: c{i} }}\ndata: {{ x: {} }}\n",
                "z".repeat(3_000_000)
            ),
        );
        resources.push(file);
    }
    repo.write("packs/big/kustomization.yaml", &format!("resources: [{}]\n", resources.join(", ")));
    over_budget(
        &repo,
        &["error[budget]: packs/big: profile big@1.0.0 layer big: `kustomize` wrote more than 32 MiB and was stopped"],
    );
}

/// A template comparing two 20 MB strings in a loop: within its fuel (one unit an iteration),
/// it would run for minutes.
const BURN: &str = "{% set a = \"x\" * 20000000 %}{% set b = \"x\" * 20000000 %}{% for i in range(100000) %}{% if a == b %}{% endif %}{% endfor %}\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: burn }\n";

/// Fuel counts instructions, not what each costs. Templates render in a worker process that is
/// stopped past its time budget: `error[budget]` names the file within seconds, not minutes.
#[test]
fn a_template_that_burns_cpu_within_its_fuel_is_stopped_on_time_naming_the_file() {
    let repo = Repo::plain_example();
    repo.write("packs/hello-universe/manifests/burn.yaml", BURN);
    let started = std::time::Instant::now();
    over_budget(
        &repo,
        &[
            "error[budget]: packs/hello-universe/manifests/burn.yaml: profile aws-profile@1.0.0 layer hello-universe: the template ran past its time budget of 2 s of CPU",
            "render.template_timeout",
        ],
    );
    // The budget is 2 s of CPU per template (and the wall clock at most 4 times that); the margin
    // is for a loaded machine, the loop alone runs for minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
}

/// Many templates each well under a tick, together over the layer's budget: the budget is
/// looked at while replies keep coming, not only when the worker falls silent.
#[test]
fn many_quick_templates_together_stop_at_the_layer_budget() {
    use common::daemon::{Daemon, example_targets, file, local};
    use std::time::Duration;
    let repo = Repo::example();
    let daemon =
        Daemon::start_with(&local(&repo), &example_targets(), "render: { template_timeout: 2s, layer_timeout: 1s }\n");
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(20), |_| file(&ui).contains("replicas: 2"));
    // Each compares two 1 MB strings a few hundred times: milliseconds, under the 50 ms tick.
    for i in 0..400 {
        repo.write(
            &format!("packs/hello-universe/manifests/quick-{i:03}.yaml"),
            &format!(
                "{{% set a = \"x\" * 1000000 %}}{{% set b = \"x\" * 1000000 %}}{{% for i in range(300) %}}{{% if a == b %}}{{% endif %}}{{% endfor %}}\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: quick-{i:03} }}\n"
            ),
        );
    }
    let slow = repo.commit("four hundred quick templates");
    daemon.wait_for("the revision refused at the layer's budget", Duration::from_secs(120), |d| {
        d.log().contains("the layer's templates ran past their time budget of 1 s of CPU together")
    });
    assert!(!file(&ui).contains("quick-"), "nothing of the refused revision applied");
    assert!(daemon.log().contains(&slow[..7]) || daemon.log().contains(&slow), "{}", daemon.log());
}

/// A commit whose templates burn CPU does not hold the daemon: a fix pushed while it evaluates
/// supersedes it and applies at once, and the API answers meanwhile.
#[test]
fn a_fix_pushed_while_a_slow_commit_evaluates_supersedes_it() {
    use common::daemon::{Daemon, TOKEN, example_targets, file, local};
    use std::time::{Duration, Instant};
    let repo = Repo::example();
    let daemon = Daemon::start_with(
        &local(&repo),
        &example_targets(),
        "render: { template_timeout: 120s, layer_timeout: 240s }\n",
    );
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(20), |_| file(&ui).contains("replicas: 2"));
    repo.write("packs/hello-universe/manifests/burn.yaml", BURN);
    let slow = repo.commit("a template that burns CPU");
    daemon.wait_for("the slow commit seen", Duration::from_secs(10), |d| d.log().contains(&slow));
    daemon.wait_for("the slow commit being evaluated", Duration::from_secs(10), |d| {
        d.revision()["evaluating"] == slow.as_str()
    });
    let asked = Instant::now();
    let (code, _) = daemon.request("GET", "/api/v1/revision", &[("Authorization", &format!("Bearer {TOKEN}"))], "");
    assert_eq!(code, 200);
    assert!(asked.elapsed() < Duration::from_secs(2), "the API waited {:?}", asked.elapsed());

    repo.remove("packs/hello-universe/manifests/burn.yaml");
    repo.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 4 }");
    let fixed = Instant::now();
    repo.commit("the fix");
    daemon.wait_for("the fix applied", Duration::from_secs(60), |_| file(&ui).contains("replicas: 4"));
    assert!(fixed.elapsed() < Duration::from_secs(60), "the fix waited {:?}", fixed.elapsed());
    assert!(daemon.log().contains("A newer revision supersedes the one being evaluated."), "{}", daemon.log());
}
