//! External renderers: kustomize and helm, run as processes.
//!
//! Rendering is otherwise pure; this is its one IO edge, behind the [`Tools`] trait so tests
//! can substitute a fake and the daemon can bound how long a tool may run. Each run is confined
//! ([`super::sandbox`]): it reads the checkout, writes its own scratch directory, has no network
//! and a scrubbed environment; its output is cut off (and the tool killed) past a budget.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::sandbox::{Confined, Sandbox};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The tool is not installed; carries what to install.
    Missing {
        tool: &'static str,
        help: &'static str,
    },
    /// The tool ran and failed; carries its stderr.
    Failed {
        tool: String,
        message: String,
    },
    TimedOut {
        tool: String,
        after: Duration,
    },
    /// The tool wrote more than the budget; it was stopped.
    TooLarge {
        tool: String,
        limit: u64,
    },
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Missing { tool, .. } => write!(f, "`{tool}` is not installed"),
            ToolError::Failed { tool, message } => write!(f, "`{tool}` failed: {message}"),
            ToolError::TimedOut { tool, after } => write!(f, "`{tool}` did not finish within {}s", after.as_secs()),
            ToolError::TooLarge { tool, limit } => {
                write!(f, "`{tool}` wrote more than {} MiB and was stopped", limit / (1024 * 1024))
            }
        }
    }
}

/// Where a tool runs: the checkout it may read and a fresh scratch directory of its own.
pub struct Workspace<'a> {
    pub checkout: &'a Path,
    pub scratch: &'a Path,
}

/// What a helm layer asks `helm template` for.
pub struct HelmRequest<'a> {
    pub release: &'a str,
    pub chart: &'a Path,
    pub namespace: &'a str,
    /// The layer's values files, in order: each `--values` before [`HelmRequest::values_file`].
    pub values_files: &'a [PathBuf],
    /// The layer's values with the cluster's overrides merged over them: the last `--values`.
    pub values_file: &'a Path,
    /// `--kube-version`: `.Capabilities.KubeVersion` (helm's own default when `None`).
    pub kube_version: Option<&'a str>,
    /// `--api-versions`, one each: added to `.Capabilities.APIVersions`.
    pub api_versions: &'a [String],
}

impl HelmRequest<'_> {
    /// The arguments of `helm template` for this request:
    ///
    /// ```text
    /// template RELEASE CHART --namespace NS [--values FILE]... --values VALUES --include-crds
    ///          [--kube-version VERSION] [--api-versions API]...
    /// ```
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "template".into(),
            self.release.into(),
            self.chart.into(),
            "--namespace".into(),
            self.namespace.into(),
        ];
        for file in self.values_files.iter().map(PathBuf::as_path).chain([self.values_file]) {
            args.push("--values".into());
            args.push(file.into());
        }
        args.push("--include-crds".into());
        if let Some(version) = self.kube_version {
            args.push("--kube-version".into());
            args.push(version.into());
        }
        for api in self.api_versions {
            args.push("--api-versions".into());
            args.push(api.into());
        }
        args
    }
}

/// Shared by the threads that render a fleet.
pub trait Tools: Sync {
    /// The output of `kustomize build <dir>`.
    fn kustomize(&self, workspace: &Workspace, dir: &Path) -> Result<String, ToolError>;
    /// The output of `helm template`.
    fn helm_template(&self, workspace: &Workspace, request: &HelmRequest) -> Result<String, ToolError>;
}

/// The tools on `PATH`: `kustomize`, or `kubectl kustomize` when kustomize is not installed on
/// its own; `helm`.
pub struct SystemTools {
    pub timeout: Duration,
    /// Bytes of output a tool may write (a layer's whole rendering).
    pub max_output: u64,
}

impl Default for SystemTools {
    fn default() -> Self {
        SystemTools { timeout: Duration::from_secs(120), max_output: super::budget::LAYER_BYTES }
    }
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        candidate.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

impl Tools for SystemTools {
    fn kustomize(&self, workspace: &Workspace, dir: &Path) -> Result<String, ToolError> {
        let (program, subcommand) = if let Some(kustomize) = which("kustomize") {
            (kustomize, "build")
        } else if let Some(kubectl) = which("kubectl") {
            (kubectl, "kustomize")
        } else {
            return Err(ToolError::Missing {
                tool: "kustomize",
                help: "install kustomize or kubectl (which has kustomize built in) on this machine",
            });
        };
        let mut confined = confine(&program, workspace, "kustomize")?;
        confined.command.arg(subcommand).arg(dir);
        run(confined, "kustomize", self.timeout, self.max_output)
    }

    fn helm_template(&self, workspace: &Workspace, request: &HelmRequest) -> Result<String, ToolError> {
        let Some(helm) = which("helm") else {
            return Err(ToolError::Missing {
                tool: "helm",
                help: "install helm (v3 or later) on this machine to render helm layers",
            });
        };
        let mut confined = confine(&helm, workspace, "helm template")?;
        confined.command.args(request.args());
        run(confined, "helm template", self.timeout, self.max_output)
    }
}

fn confine(program: &Path, workspace: &Workspace, tool: &str) -> Result<Confined, ToolError> {
    let sandbox = Sandbox { program, checkout: workspace.checkout, scratch: workspace.scratch };
    sandbox
        .command()
        .map_err(|e| ToolError::Failed { tool: tool.to_string(), message: format!("cannot set up its sandbox: {e}") })
}

/// Stderr kept for the error message; the rest is read and dropped.
const MAX_STDERR: u64 = 64 * 1024;

/// Runs a command with no stdin, collecting stdout (up to `max_output` bytes: past it the tool is
/// killed) and stderr, killing it after `timeout`.
fn run(confined: Confined, tool: &str, timeout: Duration, max_output: u64) -> Result<String, ToolError> {
    let Confined { mut command, .. } = confined;
    let failed = |message: String| ToolError::Failed { tool: tool.to_string(), message };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    // Drain both pipes on threads so a chatty tool cannot block on a full pipe.
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let over = Arc::new(AtomicBool::new(false));
    let over_flag = over.clone();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let read = stdout.take(max_output + 1).read_to_end(&mut buf);
        if buf.len() as u64 > max_output {
            over_flag.store(true, Ordering::SeqCst);
        }
        read.map(|_| buf)
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut stderr = stderr;
        let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut buf);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        buf
    });
    let started = Instant::now();
    let status = loop {
        if over.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ToolError::TooLarge { tool: tool.to_string(), limit: max_output });
        }
        match child.try_wait().map_err(|e| failed(e.to_string()))? {
            Some(status) => break status,
            None if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ToolError::TimedOut { tool: tool.to_string(), after: timeout });
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let stdout = out.join().expect("reader thread").map_err(|e| failed(e.to_string()))?;
    if stdout.len() as u64 > max_output {
        return Err(ToolError::TooLarge { tool: tool.to_string(), limit: max_output });
    }
    let stderr = err.join().expect("reader thread");
    if !status.success() {
        let message = String::from_utf8_lossy(&stderr).trim().to_string();
        return Err(failed(if message.is_empty() { status.to_string() } else { message }));
    }
    String::from_utf8(stdout).map_err(|_| failed("output is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace: a checkout holding one file, a scratch directory, and a host file beside them.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["checkout", "scratch", "host"] {
                std::fs::create_dir(dir.path().join(sub)).unwrap();
            }
            std::fs::write(dir.path().join("checkout/in.txt"), "inside").unwrap();
            std::fs::write(dir.path().join("host/secret.txt"), "host secret").unwrap();
            Fixture { dir }
        }

        fn path(&self, sub: &str) -> PathBuf {
            self.dir.path().join(sub)
        }

        /// `sh -c script` in the sandbox, with `$C`, `$S` and `$H` naming checkout, scratch, host.
        fn sh(&self, script: &str, timeout: Duration, max_output: u64) -> Result<String, ToolError> {
            let (checkout, scratch) = (self.path("checkout"), self.path("scratch"));
            let sh = which("sh").unwrap();
            let mut confined = confine(&sh, &Workspace { checkout: &checkout, scratch: &scratch }, "sh").unwrap();
            confined.command.arg("-c").arg(script).arg("sh").arg(&checkout).arg(&scratch).arg(self.path("host"));
            run(confined, "sh", timeout, max_output)
        }
    }

    const SECOND: Duration = Duration::from_secs(5);

    #[test]
    fn failing_tools_report_their_stderr() {
        let e = Fixture::new().sh("echo 'no kustomization here' >&2; exit 1", SECOND, 1024).unwrap_err();
        assert_eq!(e, ToolError::Failed { tool: "sh".into(), message: "no kustomization here".into() });
    }

    #[test]
    fn hanging_tools_are_killed() {
        let started = Instant::now();
        let e = Fixture::new().sh("sleep 10", Duration::from_millis(100), 1024).unwrap_err();
        assert!(matches!(e, ToolError::TimedOut { .. }));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_tool_writing_past_the_budget_is_stopped() {
        let e = Fixture::new().sh(
            "while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done",
            Duration::from_secs(60),
            1 << 20,
        );
        assert_eq!(e.unwrap_err(), ToolError::TooLarge { tool: "sh".into(), limit: 1 << 20 });
    }

    #[test]
    fn the_environment_is_scrubbed() {
        let out = Fixture::new().sh("env | sort", SECOND, 1 << 20).unwrap();
        for gone in ["KUBECONFIG=", "SSH_AUTH_SOCK=", "GIT_ASKPASS=", "CARGO"] {
            assert!(!out.contains(gone), "{gone} leaked: {out}");
        }
        assert!(out.contains("HTTPS_PROXY=http://127.0.0.1:9"), "{out}");
        assert!(out.lines().any(|l| l.starts_with("HOME=") && l.ends_with("/scratch")), "{out}");
    }

    /// The sandbox itself, as a tool that slipped past every check would meet it.
    #[test]
    fn a_sandboxed_tool_reads_the_checkout_writes_its_scratch_and_nothing_else() {
        if crate::render::sandbox::kernel_abi() < 4 {
            eprintln!("skipped: this kernel has no Landlock network rules");
            return;
        }
        let f = Fixture::new();
        assert_eq!(f.sh("cat \"$1/in.txt\"", SECOND, 1024).unwrap(), "inside");
        f.sh("echo hi > \"$2/out.txt\"", SECOND, 1024).unwrap();
        let e = f.sh("cat \"$3/secret.txt\"", SECOND, 1024).unwrap_err();
        assert!(e.to_string().contains("Permission denied"), "{e}");
        assert!(f.sh("cat /etc/hostname /etc/passwd", SECOND, 1024).is_err());
        assert!(f.sh("echo x > \"$1/planted\"", SECOND, 1024).is_err(), "the checkout is read-only");
        assert!(!f.path("checkout/planted").exists());
        assert!(f.sh("echo x > \"$3/planted\"", SECOND, 1024).is_err());
        assert!(!f.path("host/planted").exists());
    }
}
