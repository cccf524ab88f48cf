//! The sandbox kustomize and helm run in: a tool, the checkout it reads and a scratch directory
//! in, a [`Command`] out that can read the checkout and the system's programs, write only its
//! scratch directory, and reach no network.
//!
//! ```text
//!   parent: build the Landlock ruleset (checkout: read; /usr, /bin, /lib*: read + execute;
//!           scratch: read + write; TCP bind/connect: none; signals, abstract sockets: own only)
//!   child (pre_exec, async-signal-safe calls only):
//!           unshare(CLONE_NEWNET) (or with CLONE_NEWUSER) when permitted -> no interfaces at all
//!           prctl(PR_SET_NO_NEW_PRIVS) -> landlock_restrict_self(ruleset)
//!   exec:   env cleared but PATH; HOME, TMPDIR, XDG_*, HELM_* in scratch; proxies pointing
//!           nowhere; no KUBECONFIG, no Git credentials
//! ```
//!
//! Each layer is enforced on its own, so one that is missing (an old kernel without Landlock, a
//! systemd unit that forbids namespaces) leaves the others: the static check of kustomizations
//! ([`super::kustomization`]) and the checkout that holds nothing but the repository.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
    path_beneath_rules,
};

/// The Landlock ABI strata asks for: filesystem (with truncate and device ioctls), TCP bind and
/// connect, and scoping of signals and abstract UNIX sockets. Older kernels get what they have.
const LANDLOCK_ABI: ABI = ABI::V6;

/// System directories a tool needs to execute (its binary, a script's interpreter, libraries).
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Where proxies point: nothing listens on the discard port, and the tool has no network anyway.
const NOWHERE: &str = "http://127.0.0.1:9";

/// What a sandboxed tool may touch.
pub struct Sandbox<'a> {
    /// The tool's executable.
    pub program: &'a Path,
    /// Read only: the checkout of the repository.
    pub checkout: &'a Path,
    /// Read and write: the tool's own scratch directory (its HOME and TMPDIR).
    pub scratch: &'a Path,
}

/// How confined a tool run is, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landlock {
    /// The kernel enforces the full ruleset.
    Full,
    /// The kernel enforces part of it (an older ABI).
    Partial,
    /// No Landlock on this kernel.
    Unavailable,
}

/// A command ready to spawn, with the ruleset its child applies. Keep it until spawned: the
/// ruleset's descriptor must be open when the child starts.
pub struct Confined {
    pub command: Command,
    pub landlock: Landlock,
    _ruleset: Option<OwnedFd>,
}

impl Sandbox<'_> {
    /// A command for the tool with the environment scrubbed and, when it is spawned, the sandbox
    /// applied in the child before it runs.
    pub fn command(&self) -> std::io::Result<Confined> {
        let mut command = Command::new(self.program);
        command.env_clear().current_dir(self.scratch);
        for (key, value) in self.environment() {
            command.env(key, value);
        }
        let (ruleset, landlock) = self.ruleset()?;
        log_once(landlock);
        let fd = ruleset.as_ref().map(|fd| fd.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe system calls (unshare, prctl, landlock_restrict_self): it neither
        // allocates nor takes locks. The descriptor stays open while `Confined` lives.
        unsafe {
            command.pre_exec(move || {
                // A network namespace of its own has no interfaces, not even loopback. Refused
                // in some environments (RestrictNamespaces=, containers): Landlock still holds.
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET);
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = fd
                    && libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Confined { command, landlock, _ruleset: ruleset })
    }

    /// The tool's whole environment: PATH from strata's, everything else pointing into scratch or
    /// nowhere. No KUBECONFIG, no credentials, no SSH agent, no proxies that work.
    fn environment(&self) -> Vec<(&'static str, OsString)> {
        let scratch = |sub: &str| self.scratch.join(sub).into_os_string();
        let mut env = vec![
            ("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())),
            ("HOME", self.scratch.as_os_str().to_owned()),
            ("TMPDIR", self.scratch.as_os_str().to_owned()),
            ("XDG_CONFIG_HOME", scratch("config")),
            ("XDG_CACHE_HOME", scratch("cache")),
            ("XDG_DATA_HOME", scratch("data")),
            ("HELM_CONFIG_HOME", scratch("helm/config")),
            ("HELM_CACHE_HOME", scratch("helm/cache")),
            ("HELM_DATA_HOME", scratch("helm/data")),
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            ("LANG", "C.UTF-8".into()),
        ];
        for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
            env.push((proxy, NOWHERE.into()));
        }
        env
    }

    /// The Landlock ruleset, built in the parent (building it allocates and opens files, which
    /// the child must not do between fork and exec).
    fn ruleset(&self) -> std::io::Result<(Option<OwnedFd>, Landlock)> {
        let error = |e: landlock::RulesetError| std::io::Error::other(format!("landlock: {e}"));
        let read = AccessFs::ReadFile | AccessFs::ReadDir;
        let execute = read | AccessFs::Execute;
        let program = [self.program.to_path_buf(), std::fs::canonicalize(self.program).unwrap_or_default()];
        let devices: [PathBuf; 2] = ["/dev/null".into(), "/dev/urandom".into()];
        let created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(LANDLOCK_ABI))
            .and_then(|r| r.handle_access(AccessNet::from_all(LANDLOCK_ABI)))
            .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
            .and_then(|r| r.create())
            .and_then(|r| r.add_rules(path_beneath_rules(SYSTEM_DIRS, execute)))
            .and_then(|r| r.add_rules(path_beneath_rules(program.iter().filter(|p| p.is_file()), execute)))
            .and_then(|r| r.add_rules(path_beneath_rules([self.checkout], read)))
            .and_then(|r| r.add_rules(path_beneath_rules(&devices, read | AccessFs::WriteFile)))
            .and_then(|r| r.add_rules(path_beneath_rules([self.scratch], AccessFs::from_all(LANDLOCK_ABI))))
            .map_err(error)?;
        // No network rule is added: with TCP handled, every bind and connect is refused.
        let landlock = match kernel_abi() {
            abi if abi >= LANDLOCK_ABI as i64 => Landlock::Full,
            abi if abi >= 1 => Landlock::Partial,
            _ => Landlock::Unavailable,
        };
        Ok((created.into(), landlock))
    }
}

/// The Landlock ABI version this kernel supports, or 0 without Landlock.
pub fn kernel_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer and size 0 this call only reports the version.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    version.max(0)
}

fn log_once(landlock: Landlock) {
    static LOGGED: Once = Once::new();
    LOGGED.call_once(|| match landlock {
        Landlock::Full => tracing::info!("kustomize and helm run under Landlock (files, TCP, signals)"),
        Landlock::Partial => tracing::info!(
            "kustomize and helm run under Landlock as far as this kernel supports it; parts of the ruleset are not enforced"
        ),
        Landlock::Unavailable => tracing::warn!(
            "Landlock is unavailable (not in this kernel, or its system calls blocked by a seccomp profile): kustomize and helm run without a filesystem and network sandbox, confined only by strata's checks of kustomizations, the repository-only checkout and a scrubbed environment"
        ),
    });
}
