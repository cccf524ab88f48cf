//! Where templates render: in this process, or — in the `strata` binary — in worker processes
//! bounded by time.
//!
//! ```text
//!   rendering thread ──Request { key, context }──> worker (this binary, `__render-worker`)
//!        │      <──NeedSources── (first time it sees these templates) ──Sources──>
//!        │      <──Started { file } · Rendered { file, text } · … · Done
//!        └─ watches the worker's CPU time per template and per layer (and the wall clock, 4×):
//!           past either it kills the worker → error[budget] naming the template; a new worker
//!           serves the next request
//! ```
//!
//! Fuel bounds how many instructions a template runs and how much it allocates, not what one
//! instruction costs: `{% if a == b %}` over two strings of 24 MB costs one fuel and milliseconds,
//! and a loop of them minutes. No hook in minijinja can stop a render from outside, and a thread
//! cannot be killed, so templates run in processes that can: each a copy of this binary that
//! confines itself before it reads anything (no file or network access under Landlock, no
//! children, a data limit, killed with its parent) and renders one layer at a time.
//!
//! Libraries and tests that link strata without its binary render in this process, bounded by
//! fuel and bytes only; the binary registers itself at start ([`isolate_with`]).

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::{self, LayerTemplates, Sources, Step};
use crate::diag::{Code, Diagnostic, Diagnostics};

/// The argument that makes the `strata` binary a template worker.
pub const WORKER_ARG: &str = "__render-worker";

/// How long templates may run, in CPU time of the worker rendering them; the wall clock may run
/// [`WALL_FACTOR`] times as long (a busy host), no longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// One template.
    pub template: Duration,
    /// All of one layer's templates, for one set of values.
    pub layer: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { template: Duration::from_secs(2), layer: Duration::from_secs(10) }
    }
}

/// How much longer than its CPU limit a render may take by the wall clock.
pub const WALL_FACTOR: u32 = 4;

/// Where templates render, and how long they may.
#[derive(Clone, Debug)]
pub struct Engine {
    pub limits: Limits,
    /// Render in worker processes (when this binary registered itself).
    pub isolated: bool,
    /// Set by whoever no longer wants what renders (a daemon whose evaluation a newer revision
    /// supersedes): a worker rendering is stopped at once.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine { limits: Limits::default(), isolated: PROGRAM.get().is_some(), cancel: None }
    }
}

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
static POOL: OnceLock<Pool> = OnceLock::new();

/// Makes templates render in worker processes started as `program __render-worker` (the
/// `strata` binary itself, through `/proc/self/exe`, which stays this very binary even when a
/// package upgrade replaces the file). Called once, at start.
pub fn isolate_with(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

/// Stops the idle workers and waits for them (a command about to exit: what they used is then
/// counted as this process's children's, as it is).
pub fn shutdown() {
    if let Some(pool) = POOL.get() {
        pool.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Engine {
    pub fn render(
        &self,
        templates: &LayerTemplates,
        context: &Value,
        object: &str,
        layer_limit: u64,
    ) -> Result<Vec<(String, String)>, Diagnostics> {
        match (self.isolated, PROGRAM.get()) {
            (true, Some(program)) => {
                if let Some(spent) = templates.timed_out.get() {
                    return Err(spent.clone());
                }
                let pool = POOL.get_or_init(|| Pool { program: program.clone(), idle: Mutex::default() });
                let result = pool.render(templates, context, object, layer_limit, self.limits, self.cancel.as_deref());
                if let Err(d) = &result
                    && d.iter().any(|d| d.code == Code::Budget && d.message.contains("time budget"))
                {
                    let _ = templates.timed_out.set(d.clone());
                }
                result
            }
            _ => templates.render_here(context, object, layer_limit, &mut |_| {}),
        }
    }
}

/// What a rendering thread asks a worker.
#[derive(Deserialize)]
enum Request {
    Render { key: [u8; 32], object: String, context: Value, layer_limit: u64 },
    Sources(Box<Sources>),
}

/// [`Request`] as the parent writes it, borrowing what it sends.
#[derive(Serialize)]
enum Sent<'a> {
    Render { key: [u8; 32], object: &'a str, context: &'a Value, layer_limit: u64 },
    Sources(&'a Sources),
}

/// What a worker answers, as it goes.
#[derive(Serialize, Deserialize)]
enum Reply {
    /// It has not compiled these templates yet: send them.
    NeedSources,
    Started {
        file: String,
    },
    Rendered {
        file: String,
        text: String,
    },
    Done(Result<(), Diagnostics>),
}

/// Frames larger than this are refused both ways (a layer renders to at most 32 MiB).
const MAX_FRAME: usize = 256 * 1024 * 1024;

fn write_frame(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(&bytes)?;
    out.flush()
}

fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// Workers not rendering, ready for the next request.
struct Pool {
    program: PathBuf,
    idle: Mutex<Vec<Worker>>,
}

/// A worker process, with a thread reading its replies.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Reply>,
    /// The clock ticks a second of `/proc/<pid>/stat` CPU times count.
    ticks: u64,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a request to a worker did not come back with an answer.
enum Failed {
    /// A template (or the layer) ran past its time: the file, and which limit.
    TimedOut { file: Option<String>, limit: Duration, what: &'static str },
    /// The worker could not be started or talked to, or died (its memory limit, a crash).
    Broken(String),
    /// Whoever asked no longer wants it.
    Cancelled,
}

impl Pool {
    fn render(
        &self,
        templates: &LayerTemplates,
        context: &Value,
        object: &str,
        layer_limit: u64,
        limits: Limits,
        cancel: Option<&AtomicBool>,
    ) -> Result<Vec<(String, String)>, Diagnostics> {
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut worker = match taken.map(Ok).unwrap_or_else(|| Worker::start(&self.program)) {
            Ok(worker) => worker,
            Err(e) => return Err(failure(templates, object, Failed::Broken(format!("cannot start it: {e}")))),
        };
        match worker.render(templates, context, object, layer_limit, limits, cancel) {
            Ok(result) => {
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(worker);
                result
            }
            // Dropping the worker kills it: whatever it was doing stops now.
            Err(failed) => Err(failure(templates, object, failed)),
        }
    }
}

/// The diagnostic for a render that did not finish.
fn failure(templates: &LayerTemplates, object: &str, failed: Failed) -> Diagnostics {
    let base = &templates.sources.base;
    let diagnostic = match failed {
        Failed::TimedOut { file, limit, what } => {
            let (message, help) = match what {
                "template" => (
                    format!("the template ran past its time budget of {} s of CPU", limit.as_secs_f64()),
                    "look for loops over large strings or values (comparisons, `in`, filters): fuel counts instructions, not what each costs; the budget is the host config's render.template_timeout",
                ),
                _ => (
                    format!(
                        "the layer's templates ran past their time budget of {} s of CPU together",
                        limit.as_secs_f64()
                    ),
                    "a layer renders in at most this much time (the host config's render.layer_timeout): look for templates that do far more work than they should",
                ),
            };
            Diagnostic::new(Code::Budget, message).in_file(file.unwrap_or_else(|| base.clone())).help(help)
        }
        Failed::Broken(why) => Diagnostic::new(Code::Template, format!("the template engine's process failed: {why}"))
            .in_file(base.clone())
            .help("it stops at 1 GiB of memory: look for templates that build very large values"),
        Failed::Cancelled => Diagnostic::new(Code::Template, "not rendered: cancelled").in_file(base.clone()),
    };
    Diagnostics::from(diagnostic.about(object))
}

impl Worker {
    fn start(program: &PathBuf) -> std::io::Result<Worker> {
        let mut command = Command::new(program);
        command.arg(WORKER_ARG).env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        // SAFETY: runs in the forked child before exec; prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // Dies with the process that started it, whatever kills that.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, replies) = mpsc::channel();
        std::thread::Builder::new().name("render-worker-reader".into()).spawn(move || {
            let mut stdout = BufReader::new(stdout);
            while let Ok(reply) = read_frame::<Reply>(&mut stdout) {
                if tx.send(reply).is_err() {
                    break;
                }
            }
        })?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Worker { child, stdin, replies, ticks })
    }

    /// CPU time the worker has used, from `/proc/<pid>/stat` (user and system).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name in parentheses, which may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
        Duration::from_millis((ticks(11) + ticks(12)) * 1000 / self.ticks)
    }

    fn render(
        &mut self,
        templates: &LayerTemplates,
        context: &Value,
        object: &str,
        layer_limit: u64,
        limits: Limits,
        cancel: Option<&AtomicBool>,
    ) -> Result<Result<Vec<(String, String)>, Diagnostics>, Failed> {
        let broken = |e: std::io::Error| Failed::Broken(e.to_string());
        let request = Sent::Render { key: templates.key, object, context, layer_limit };
        write_frame(&mut self.stdin, &request).map_err(broken)?;
        let mut out = Vec::new();
        // CPU time is read from /proc only at a tick (every 50 ms of a render that is still
        // going), never per template: most layers finish before their first tick and cost no
        // read at all. A budget then counts from the first tick after its start, at most one
        // tick late; the wall-clock bounds count from the start.
        let started = Instant::now();
        let mut layer_cpu: Option<Duration> = None;
        let mut current: Option<(String, Instant, Option<Duration>)> = None;
        let mut looked = started;
        loop {
            let reply = self.replies.recv_timeout(TICK);
            // Looked at every tick, whether replies keep coming or not: a layer of many quick
            // templates is bounded as one slow template is.
            if looked.elapsed() >= TICK {
                looked = Instant::now();
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(Failed::Cancelled);
                }
                let cpu = self.cpu();
                let layer_base = *layer_cpu.get_or_insert(cpu);
                if cpu.saturating_sub(layer_base) > limits.layer || started.elapsed() > limits.layer * WALL_FACTOR {
                    let file = current.map(|(file, ..)| file);
                    return Err(Failed::TimedOut { file, limit: limits.layer, what: "layer" });
                }
                if let Some((file, wall, at)) = &mut current
                    && (cpu.saturating_sub(*at.get_or_insert(cpu)) > limits.template
                        || wall.elapsed() > limits.template * WALL_FACTOR)
                {
                    return Err(Failed::TimedOut {
                        file: Some(file.clone()),
                        limit: limits.template,
                        what: "template",
                    });
                }
            }
            let reply = match reply {
                Ok(reply) => reply,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(Failed::Broken(format!("it ended ({status})")));
                }
            };
            match reply {
                Reply::NeedSources => {
                    write_frame(&mut self.stdin, &Sent::Sources(&templates.sources)).map_err(broken)?;
                }
                Reply::Started { file } => current = Some((file, Instant::now(), None)),
                Reply::Rendered { file, text } => {
                    current = None;
                    out.push((file, text));
                }
                Reply::Done(result) => return Ok(result.map(|()| out)),
            }
        }
    }
}

/// How often a render still going is looked at: cancelled, over a budget.
const TICK: Duration = Duration::from_millis(50);

/// Memory a worker may allocate: fuel bounds a template's data near 128 MiB; this bounds
/// everything else a hostile one could try.
const WORKER_DATA_LIMIT: u64 = 1024 * 1024 * 1024;
/// Compiled layers a worker keeps: every layer of a large fleet's profile versions (a fleet of
/// 10 profiles × 3 versions × 4 layers has 120, which a cache of 64 recompiled over and over),
/// forgotten all at once past it.
const WORKER_CACHE: usize = 2048;

/// The worker process: confines itself, then renders what its parent sends until its stdin
/// closes. Never returns.
pub fn worker_main() -> ! {
    confine();
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = std::io::BufWriter::new(std::io::stdout().lock());
    let mut compiled: HashMap<[u8; 32], LayerTemplates> = HashMap::new();
    loop {
        let Ok(request) = read_frame::<Request>(&mut input) else { std::process::exit(0) };
        let Request::Render { key, object, context, layer_limit } = request else { std::process::exit(2) };
        if !compiled.contains_key(&key) {
            if write_frame(&mut output, &Reply::NeedSources).is_err() {
                std::process::exit(0);
            }
            let Ok(Request::Sources(sources)) = read_frame::<Request>(&mut input) else { std::process::exit(2) };
            if compiled.len() >= WORKER_CACHE {
                compiled.clear();
            }
            match template::compile_sources(*sources, &object) {
                Ok(templates) => {
                    compiled.insert(key, templates);
                }
                Err(diagnostics) => {
                    if write_frame(&mut output, &Reply::Done(Err(diagnostics))).is_err() {
                        std::process::exit(0);
                    }
                    continue;
                }
            }
        }
        let templates = &compiled[&key];
        let mut broken = false;
        let result = templates.render_here(&context, &object, layer_limit, &mut |step| {
            let reply = match step {
                Step::Started { file } => Reply::Started { file: file.to_string() },
                Step::Rendered { file, text } => Reply::Rendered { file: file.to_string(), text: text.to_string() },
            };
            broken |= write_frame(&mut output, &reply).is_err();
        });
        if broken || write_frame(&mut output, &Reply::Done(result.map(|_| ()))).is_err() {
            std::process::exit(0);
        }
    }
}

/// What a worker may do, set before it reads its first request: no files, no network, no
/// signals to others (Landlock, as far as the kernel has it), no new privileges, no children,
/// no core dumps, a bounded data segment.
fn confine() {
    use landlock::{ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope};
    let limit = |resource, value: u64| {
        let rlimit = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: setrlimit with a valid struct.
        unsafe { libc::setrlimit(resource, &rlimit) };
    };
    limit(libc::RLIMIT_DATA, WORKER_DATA_LIMIT);
    limit(libc::RLIMIT_CORE, 0);
    limit(libc::RLIMIT_NPROC, 0);
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    let abi = ABI::V6;
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create());
    // Nothing is allowed: with no rules, every handled access is refused.
    if let Ok(ruleset) = ruleset {
        let _ = ruleset.restrict_self();
    }
}
