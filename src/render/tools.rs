//! External renderers: kustomize and helm, run as processes.
//!
//! Rendering is otherwise pure; this is its one IO edge, behind the [`Tools`] trait so tests
//! can substitute a fake and the daemon can bound how long a tool may run.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Missing { tool, .. } => write!(f, "`{tool}` is not installed"),
            ToolError::Failed { tool, message } => write!(f, "`{tool}` failed: {message}"),
            ToolError::TimedOut { tool, after } => write!(f, "`{tool}` did not finish within {}s", after.as_secs()),
        }
    }
}

/// What a helm layer asks `helm template` for.
pub struct HelmRequest<'a> {
    pub release: &'a str,
    pub chart: &'a Path,
    pub namespace: &'a str,
    pub values_file: &'a Path,
}

pub trait Tools {
    /// The output of `kustomize build <dir>`.
    fn kustomize(&self, dir: &Path) -> Result<String, ToolError>;
    /// The output of `helm template`.
    fn helm_template(&self, request: &HelmRequest) -> Result<String, ToolError>;
}

/// The tools on `PATH`: `kustomize`, or `kubectl kustomize` when kustomize is not installed on
/// its own; `helm`.
pub struct SystemTools {
    pub timeout: Duration,
}

impl Default for SystemTools {
    fn default() -> Self {
        SystemTools { timeout: Duration::from_secs(120) }
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
    fn kustomize(&self, dir: &Path) -> Result<String, ToolError> {
        let mut command = if let Some(kustomize) = which("kustomize") {
            let mut c = Command::new(kustomize);
            c.arg("build");
            c
        } else if let Some(kubectl) = which("kubectl") {
            let mut c = Command::new(kubectl);
            c.arg("kustomize");
            c
        } else {
            return Err(ToolError::Missing {
                tool: "kustomize",
                help: "install kustomize or kubectl (which has kustomize built in) on this machine",
            });
        };
        command.arg(dir);
        run(command, "kustomize", self.timeout)
    }

    fn helm_template(&self, request: &HelmRequest) -> Result<String, ToolError> {
        let Some(helm) = which("helm") else {
            return Err(ToolError::Missing {
                tool: "helm",
                help: "install helm (v3) on this machine to render helm layers",
            });
        };
        let mut command = Command::new(helm);
        command
            .arg("template")
            .arg(request.release)
            .arg(request.chart)
            .arg("--namespace")
            .arg(request.namespace)
            .arg("--values")
            .arg(request.values_file)
            .arg("--include-crds");
        run(command, "helm template", self.timeout)
    }
}

/// Runs a command with no stdin, collecting stdout and stderr, killing it after `timeout`.
fn run(mut command: Command, tool: &str, timeout: Duration) -> Result<String, ToolError> {
    let failed = |message: String| ToolError::Failed { tool: tool.to_string(), message };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    // Drain both pipes on threads so a chatty tool cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
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

    #[test]
    fn failing_tools_report_their_stderr() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo 'no kustomization here' >&2; exit 1"]);
        let e = run(c, "kustomize", Duration::from_secs(5)).unwrap_err();
        assert_eq!(e, ToolError::Failed { tool: "kustomize".into(), message: "no kustomization here".into() });
    }

    #[test]
    fn hanging_tools_are_killed() {
        let mut c = Command::new("sleep");
        c.arg("10");
        let started = Instant::now();
        let e = run(c, "helm template", Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, ToolError::TimedOut { .. }));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
