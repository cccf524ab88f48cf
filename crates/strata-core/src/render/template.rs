//! Templated manifests: a `manifests` layer's files, rendered with minijinja.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file under the layer's source is a template; files whose
//! name starts with `_` are partials, available to `{% include %}` and `{% import %}` but not
//! rendered on their own. Templates see `values`, `profile`, `layer` and `cluster`. A missing
//! value is an error (strict undefined). Each render runs on a fuel budget (a runaway loop ends
//! when its fuel does) and a byte budget; what fuel cannot bound — an instruction that costs as
//! much as the strings it compares — is bounded by time, in the worker process templates
//! render in ([`super::engine`]).

use std::collections::HashSet;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::budget;
use super::engine::Engine;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::source::read_diag;
use crate::source::{self, EntryKind, Tree};

/// Instructions one template may execute. Real manifests use a few thousand; a loop that runs
/// away hits this long before it costs noticeable time.
pub const FUEL: u64 = 2_000_000;

/// A layer's templates, compiled once and rendered for every cluster that uses the layer.
pub struct LayerTemplates {
    env: Environment<'static>,
    /// What they were compiled from: what a worker process compiles them again from.
    pub(crate) sources: Arc<Sources>,
    /// The digest of `sources`: how a worker knows it has them already.
    pub(crate) key: [u8; 32],
    /// Top-level variables the templates read: decides which renders can be shared.
    pub variables: HashSet<String>,
    /// Set when a render of these templates ran past its time: every other render of them (for
    /// other values, in this revision) fails at once the same way, so a slow template costs its
    /// time budget once, not once per cluster.
    pub(crate) timed_out: std::sync::OnceLock<Diagnostics>,
}

/// A layer's template texts, as read from the repository.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sources {
    /// Source directory (or file) the template names are relative to.
    pub base: String,
    /// Every template, partials included: (name relative to `base`, text).
    pub templates: Vec<(String, String)>,
    /// Templates rendered as manifests, in path order (names relative to `base`).
    pub manifests: Vec<String>,
    /// Manifests that were SOPS-encrypted in the repository ([`crate::source::sops`]): used as they
    /// decrypt, never templated (their values are data, and a `{{` in one is not an expression).
    #[serde(default)]
    pub literal: Vec<String>,
}

/// One step of a render, as it happens: what a worker process reports so its parent can tell
/// which template runs past its time.
pub enum Step<'a> {
    Started { file: &'a str },
    Rendered { file: &'a str, text: &'a str },
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

/// Reads and compiles the templates under `source`. `object` names the layer for diagnostics.
pub fn compile(tree: &dyn Tree, source: &str, object: &str) -> Result<LayerTemplates, Diagnostics> {
    compile_sources(read(tree, source, object)?, object)
}

/// Reads the templates under `source`.
fn read(tree: &dyn Tree, source: &str, object: &str) -> Result<Sources, Diagnostics> {
    let (real, kind) = source::resolve(tree, source).map_err(|e| Diagnostics::from(read_diag(source, e)))?;
    let (base, files) = if kind == EntryKind::File {
        let parent = source.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("").to_string();
        (parent, vec![(source.to_string(), real)])
    } else {
        (source.to_string(), source::walk_files(tree, source).map_err(|e| Diagnostics::from(read_diag(source, e)))?)
    };

    let mut diags = Diagnostics::new();
    let mut manifests = Vec::new();
    let mut literal = Vec::new();
    let mut templates = Vec::new();
    for (shown, real) in files {
        let name = shown.strip_prefix(&base).unwrap_or(&shown).trim_start_matches('/').to_string();
        let file_name = name.rsplit('/').next().unwrap_or(&name);
        let partial = file_name.starts_with('_');
        if !partial && !is_manifest(file_name) {
            continue;
        }
        let text = match source::read_file(tree, &real) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    diags.push(Diagnostic::new(Code::Template, "file is not UTF-8").in_file(&shown).about(object));
                    continue;
                }
            },
            Err(e) => {
                diags.push(read_diag(&shown, e).about(object));
                continue;
            }
        };
        let decrypted = tree.decrypted(&real);
        if partial && decrypted {
            // Included into other templates, its values would land in objects that are no Secret.
            diags.push(
                Diagnostic::new(Code::Decrypt, "a SOPS-encrypted file cannot be a partial")
                    .in_file(&shown)
                    .about(object)
                    .help("make it a manifest of its own (a name not starting with `_`): encrypted files are used as they decrypt"),
            );
            continue;
        }
        if !partial {
            manifests.push(name.clone());
            if decrypted {
                literal.push(name.clone());
            }
        }
        templates.push((name, text));
    }
    diags.into_result(Sources { base, templates, manifests, literal })
}

/// Compiles templates read before (here, or in a worker process from what its parent read).
pub(crate) fn compile_sources(sources: Sources, object: &str) -> Result<LayerTemplates, Diagnostics> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let mut diags = Diagnostics::new();
    let mut hasher = Sha256::new();
    hasher.update(sources.base.as_bytes());
    for (name, text) in &sources.templates {
        let literal = sources.literal.contains(name);
        for part in [name.as_bytes(), &[0], text.as_bytes(), &[u8::from(literal)]] {
            hasher.update(part);
        }
        if literal {
            continue;
        }
        match engine(|| env.add_template_owned(name.clone(), text.clone())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => diags.push(template_diag(&e, &sources.base, object)),
            Err(crash) => {
                let file = source::join(&sources.base, name).unwrap_or_default();
                diags.push(crash_diag(&crash, &file, object));
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags.sorted());
    }
    let mut variables = HashSet::new();
    for name in sources.manifests.iter().filter(|n| !sources.literal.contains(n)) {
        if let Ok(template) = env.get_template(name) {
            variables.extend(template.undeclared_variables(false));
        }
    }
    Ok(LayerTemplates {
        env,
        sources: Arc::new(sources),
        key: hasher.finalize().into(),
        variables,
        timed_out: Default::default(),
    })
}

impl LayerTemplates {
    /// Renders every manifest template with `context`, where `engine` says. Returns (file,
    /// rendered text) pairs. Each template writes at most [`budget::TEMPLATE_BYTES`], all of them
    /// together at most `layer_limit`; the first to go past stops the rendering.
    pub fn render(
        &self,
        context: &serde_json::Value,
        object: &str,
        layer_limit: u64,
        engine: &Engine,
    ) -> Result<Vec<(String, String)>, Diagnostics> {
        engine.render(self, context, object, layer_limit)
    }

    /// Renders here, in this process, telling `steps` of each template as it starts and ends.
    pub(crate) fn render_here(
        &self,
        context: &serde_json::Value,
        object: &str,
        layer_limit: u64,
        steps: &mut dyn FnMut(Step),
    ) -> Result<Vec<(String, String)>, Diagnostics> {
        let context = minijinja::Value::from(minijinja::value::Serde(context));
        let base = &self.sources.base;
        let mut out = Vec::with_capacity(self.sources.manifests.len());
        let mut diags = Diagnostics::new();
        let mut left = layer_limit;
        for name in &self.sources.manifests {
            let file = source::join(base, name).unwrap_or_default();
            if self.sources.literal.contains(name) {
                let text = self.sources.templates.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str());
                let text = text.expect("read above").to_string();
                if text.len() as u64 > left {
                    diags.push(
                        Diagnostic::new(
                            Code::Budget,
                            format!("the layer's files come to more than {} together", budget::mib(layer_limit)),
                        )
                        .in_file(file)
                        .about(object),
                    );
                    return Err(diags.sorted());
                }
                left -= text.len() as u64;
                steps(Step::Started { file: &file });
                steps(Step::Rendered { file: &file, text: &text });
                out.push((file, text));
                continue;
            }
            let template = self.env.get_template(name).expect("compiled above");
            steps(Step::Started { file: &file });
            let limit = left.min(budget::TEMPLATE_BYTES);
            let mut writer = budget::Bounded::new(limit);
            // A bug in the template engine must not take the daemon with it (found by fuzzing).
            let rendered = match engine(|| template.render_captured_to(&context, &mut writer).map(|_| ())) {
                Ok(result) => result,
                Err(crash) => {
                    diags.push(crash_diag(&crash, &file, object));
                    continue;
                }
            };
            match rendered {
                Ok(()) => {
                    left -= writer.buf.len() as u64;
                    match String::from_utf8(writer.buf) {
                        Ok(text) => {
                            steps(Step::Rendered { file: &file, text: &text });
                            out.push((file, text));
                        }
                        Err(_) => diags.push(
                            Diagnostic::new(Code::Template, "renders to text that is not UTF-8")
                                .in_file(file)
                                .about(object),
                        ),
                    }
                }
                Err(_) if writer.exceeded => {
                    let (what, help) = if limit < budget::TEMPLATE_BYTES {
                        (
                            format!("the layer's templates render to more than {} together", budget::mib(layer_limit)),
                            "a layer renders to at most this much: look for templates that write far more than they should",
                        )
                    } else {
                        (
                            format!("the template renders to more than {}", budget::mib(budget::TEMPLATE_BYTES)),
                            "a template renders to at most this much: look for a loop or repetition that writes far more than it should",
                        )
                    };
                    diags.push(Diagnostic::new(Code::Budget, what).in_file(file).about(object).help(help));
                    return Err(diags.sorted());
                }
                Err(e) => diags.push(template_diag(&e, base, object)),
            }
        }
        diags.into_result(out)
    }
}

/// A panic inside the template engine, with its message: the panic's payload is all there is of
/// its cause.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EnginePanic(String);

/// Runs the template engine, turning a panic inside it into its message: minijinja 3.1 panics
/// on some templates instead of refusing them (`{% import "x" as 1 %}` reaches an
/// `unreachable!()` in its code generator), and a repository's content must never crash strata.
fn engine<T>(run: impl FnOnce() -> T) -> Result<T, EnginePanic> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|payload| {
        EnginePanic(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string()),
        )
    })
}

fn crash_diag(crash: &EnginePanic, file: &str, object: &str) -> Diagnostic {
    Diagnostic::new(Code::Template, format!("the template engine failed on this template ({crash})"))
        .in_file(file)
        .about(object)
        .help("a construct here trips a bug in minijinja; rewrite it (`{% import … as NAME %}` takes a plain name)")
}

/// A minijinja error as a diagnostic on the template's file and line, quoting the expression
/// that failed when the error points at one.
fn template_diag(e: &minijinja::Error, base: &str, object: &str) -> Diagnostic {
    let file = e.name().and_then(|n| source::join(base, n)).unwrap_or_else(|| base.to_string());
    let expression = e.range().zip(e.template_source()).and_then(|(range, text)| text.get(range)).map(str::trim);
    let (message, help) = match e.kind() {
        ErrorKind::UndefinedError => (
            match expression {
                Some(expr) => format!("undefined value `{expr}`"),
                None => "undefined value".to_string(),
            },
            "set it in the layer's values (profile.yaml) or the cluster's overrides, or give a default with `| default(...)`",
        ),
        ErrorKind::OutOfFuel => (
            format!("template ran past its budget of {FUEL} steps"),
            "look for a loop that does not end or runs over a huge range",
        ),
        ErrorKind::SyntaxError => {
            ("template syntax error".to_string(), "fix the template; use {% raw %}…{% endraw %} around literal `{{`")
        }
        _ => (e.kind().to_string(), "fix the template"),
    };
    let message = match e.detail() {
        // "`x` is undefined" says again what the quoted expression already says.
        Some(_) if e.kind() == ErrorKind::UndefinedError && expression.is_some() => message,
        Some(detail) => format!("{message}: {detail}"),
        None => message,
    };
    Diagnostic::new(Code::Template, message).in_file(file).at_line(e.line().unwrap_or(0)).about(object).help(help)
}
