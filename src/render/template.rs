//! Templated manifests: a `manifests` layer's files, rendered with minijinja.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file under the layer's source is a template; files whose
//! name starts with `_` are partials, available to `{% include %}` and `{% import %}` but not
//! rendered on their own. Templates see `values`, `profile`, `layer` and `cluster`. A missing
//! value is an error (strict undefined), and each render runs on a fuel budget so a runaway loop
//! fails in milliseconds.

use std::collections::HashSet;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use super::budget;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::repo::read_diag;
use crate::source::{self, EntryKind, Tree};

/// Instructions one template may execute. Real manifests use a few thousand; a loop that runs
/// away hits this long before it costs noticeable time.
pub const FUEL: u64 = 2_000_000;

/// A layer's templates, compiled once and rendered for every cluster that uses the layer.
pub struct LayerTemplates {
    env: Environment<'static>,
    /// Source directory (or file) the template names are relative to.
    base: String,
    /// Templates rendered as manifests, in path order (names relative to `base`).
    manifests: Vec<String>,
    /// Top-level variables the templates read: decides which renders can be shared.
    pub variables: HashSet<String>,
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

/// Reads and compiles the templates under `source`. `object` names the layer for diagnostics.
pub fn compile(tree: &dyn Tree, source: &str, object: &str) -> Result<LayerTemplates, Diagnostics> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|_| AutoEscape::None);

    let (real, kind) = source::resolve(tree, source).map_err(|e| Diagnostics::from(read_diag(source, e)))?;
    let (base, files) = if kind == EntryKind::File {
        let parent = source.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("").to_string();
        (parent, vec![(source.to_string(), real)])
    } else {
        (source.to_string(), source::walk_files(tree, source).map_err(|e| Diagnostics::from(read_diag(source, e)))?)
    };

    let mut diags = Diagnostics::new();
    let mut manifests = Vec::new();
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
        match engine(|| env.add_template_owned(name.clone(), text)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                diags.push(template_diag(&e, &base, object));
                continue;
            }
            Err(crash) => {
                diags.push(crash_diag(&crash, &shown, object));
                continue;
            }
        }
        if !partial {
            manifests.push(name);
        }
    }
    if !diags.is_empty() {
        return Err(diags.sorted());
    }
    let mut variables = HashSet::new();
    for name in &manifests {
        if let Ok(template) = env.get_template(name) {
            variables.extend(template.undeclared_variables(false));
        }
    }
    Ok(LayerTemplates { env, base, manifests, variables })
}

impl LayerTemplates {
    /// Renders every manifest template with `context`. Returns (file, rendered text) pairs. Each
    /// template writes at most [`budget::TEMPLATE_BYTES`], all of them together at most
    /// `layer_limit`; the first to go past stops the rendering.
    pub fn render(
        &self,
        context: &minijinja::Value,
        object: &str,
        layer_limit: u64,
    ) -> Result<Vec<(String, String)>, Diagnostics> {
        let mut out = Vec::with_capacity(self.manifests.len());
        let mut diags = Diagnostics::new();
        let mut left = layer_limit;
        for name in &self.manifests {
            let template = self.env.get_template(name).expect("compiled above");
            let file = source::join(&self.base, name).unwrap_or_default();
            let limit = left.min(budget::TEMPLATE_BYTES);
            let mut writer = budget::Bounded::new(limit);
            // A bug in the template engine must not take the daemon with it (found by fuzzing).
            let rendered = match engine(|| template.render_captured_to(context, &mut writer).map(|_| ())) {
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
                        Ok(text) => out.push((file, text)),
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
                Err(e) => diags.push(template_diag(&e, &self.base, object)),
            }
        }
        diags.into_result(out)
    }
}

/// Runs the template engine, turning a panic inside it into its message: minijinja 3.1 panics
/// on some templates instead of refusing them (`{% import "x" as 1 %}` reaches an
/// `unreachable!()` in its code generator), and a repository's content must never crash strata.
fn engine<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string())
    })
}

fn crash_diag(message: &str, file: &str, object: &str) -> Diagnostic {
    Diagnostic::new(Code::Template, format!("the template engine failed on this template ({message})"))
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
