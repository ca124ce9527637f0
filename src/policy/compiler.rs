//! Compiling plugins in a child process.
//!
//! Cranelift is most of the code a running operator would otherwise map (about 5 MiB of
//! its pages were resident after one compile) and needs several MiB of heap while it
//! works. The operator therefore compiles each component by running its own executable
//! again as `ecr-token-refresh compile-plugin` ([`COMPILE_SUBCOMMAND`]): the component's
//! bytes on stdin, the compiled artifact ([`Engine::precompile_component`]) on stdout.
//! The host loads the artifact with [`Component::deserialize`]; all of the compiler's
//! memory goes with the child, and a component that crashes the compiler or keeps it
//! busy past [`COMPILE_TIMEOUT`] (the child is killed) fails its own load instead of
//! taking the operator with it. The child limits its own memory
//! ([`limit_memory`], `policy.compile_memory_bytes`): a component whose compilation needs
//! more fails its load with a message naming the limit.
//!
//! The operator's `run` and `once` turn this on ([`compile_in_child_process`]); elsewhere
//! (tests, `plugin test`, `render`) components compile in process. An executable that
//! cannot be started falls back to compiling in process.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use wasmtime::Engine;

/// The hidden subcommand that compiles a component from stdin to stdout.
pub const COMPILE_SUBCOMMAND: &str = "compile-plugin";

/// The executable to run as the compiler, once [`compile_in_child_process`] was called.
static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// Makes every plugin host of this process compile components by running `program`
/// [`COMPILE_SUBCOMMAND`] (normally this very executable: `/proc/self/exe` on Linux, which
/// is the running binary even if its file was replaced since). The first call wins.
pub fn compile_in_child_process(program: PathBuf) {
    let _ = COMPILER.set(program);
}

/// The running executable, to be its own plugin compiler.
pub fn this_executable() -> Option<PathBuf> {
    if cfg!(target_os = "linux") {
        return Some(PathBuf::from("/proc/self/exe"));
    }
    std::env::current_exe().ok()
}

/// The compiler executable, if this process compiles in a child.
pub(super) fn child_compiler() -> Option<&'static Path> {
    COMPILER.get().map(PathBuf::as_path)
}

/// Compiles component `bytes` for an engine made with `config`: the artifact
/// [`Component::deserialize`](wasmtime::component::Component::deserialize) takes.
///
/// # Errors
/// wasmtime's message (with its causes) when the bytes are not a valid component or do
/// not compile.
pub fn precompile(config: &wasmtime::Config, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let engine = Engine::new(config).map_err(super::host::wt)?;
    engine.precompile_component(bytes).map_err(super::host::wt)
}

/// How long a compile in a child process may take before the child is killed and the
/// component fails to load. Compiling a 1.6 MB JavaScript component takes a few seconds
/// in a release build; a component that keeps the compiler busy for minutes is refused.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the Rust runtime prints when an allocation fails (then it aborts): in a compiler
/// child, its memory limit was reached.
const ALLOCATION_FAILED: &str = "memory allocation of";

/// Limits this process's memory to `bytes` (`RLIMIT_DATA`: its heap and private writable
/// mappings, thread stacks included); an allocation beyond it fails and the process
/// aborts. For the [`COMPILE_SUBCOMMAND`], before it reads the component.
///
/// # Errors
/// The OS error when the limit cannot be set.
pub fn limit_memory(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit(2) reads the struct passed by reference and changes only this
    // process's own limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `program` [`COMPILE_SUBCOMMAND`] `--max-bytes <max_bytes> --max-memory
/// <max_memory>` with `bytes` on its stdin and returns what it printed on stdout (the
/// artifact). A child still running after `timeout` is killed.
///
/// # Errors
/// [`ChildError::Spawn`] when the program cannot be started (the caller compiles in
/// process instead); [`ChildError::Failed`] with its stderr, or how it ended, when it did
/// not succeed or took longer than `timeout`; one that ran out of `max_memory` says so.
pub(super) fn precompile_in_child(
    program: &Path,
    bytes: &[u8],
    max_bytes: u64,
    max_memory: u64,
    timeout: Duration,
) -> Result<Vec<u8>, ChildError> {
    let mut child = Command::new(program)
        .arg(COMPILE_SUBCOMMAND)
        .arg("--max-bytes")
        .arg(max_bytes.to_string())
        .arg("--max-memory")
        .arg(max_memory.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .map_err(|e| ChildError::Spawn(format!("{}: {e}", program.display())))?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let input = bytes.to_vec();
    let (tx, rx) = mpsc::channel();
    // Feeding and collecting happen on a thread of their own, so that this one can stop a
    // child that never finishes. (The child reads all of stdin before it writes anything,
    // so writing first cannot block on a full stdout pipe.)
    std::thread::spawn(move || {
        let written = stdin.map(|mut s| s.write_all(&input)).transpose();
        let _ = tx.send((written, child.wait_with_output()));
    });
    let (written, output) = match rx.recv_timeout(timeout) {
        Ok(done) => done,
        // It finished just as the time ran out: its answer stands.
        Err(_) if let Ok(done) = rx.try_recv() => done,
        Err(_) => {
            // SAFETY: kill(2) with a plain pid and signal. The pid is the child's unless
            // `wait_with_output` reaped it in the instant since `try_recv` above; a reaped
            // pid is not handed out again until the kernel's pid counter wraps around.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = rx.recv();
            return Err(ChildError::Failed(format!(
                "the compiler process took longer than {} s and was stopped",
                timeout.as_secs_f64()
            )));
        }
    };
    let output =
        output.map_err(|e| ChildError::Failed(format!("waiting for the compiler process: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr.trim();
    if message.contains(ALLOCATION_FAILED) {
        return Err(ChildError::Failed(format!(
            "compiling the component needs more memory than the compiler process may use \
             ({max_memory} bytes, policy.compile_memory_bytes)"
        )));
    }
    Err(ChildError::Failed(match (message.is_empty(), written) {
        (false, _) => message.to_string(),
        (true, Err(e)) => format!("the compiler process did not read the component: {e}"),
        (true, Ok(_)) => format!("the compiler process ended with {}", output.status),
    }))
}

/// Why a compile in a child process did not give an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChildError {
    /// The program could not be started.
    Spawn(String),
    /// It ran and failed: its message, or how it ended.
    Failed(String),
}

/// The [`COMPILE_SUBCOMMAND`]: reads a component from `input` (at most `max_bytes`),
/// compiles it for an engine made with `config`, and writes the artifact to `output`.
///
/// # Errors
/// A message for stderr: unreadable input, a component over `max_bytes`, or wasmtime's.
pub fn compile_stream(
    config: &wasmtime::Config,
    input: impl Read,
    mut output: impl Write,
    max_bytes: u64,
) -> Result<(), String> {
    let mut bytes = Vec::new();
    input
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the component from stdin: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("the component is larger than {max_bytes} bytes"));
    }
    let artifact = precompile(config, &bytes)?;
    output
        .write_all(&artifact)
        .and_then(|()| output.flush())
        .map_err(|e| format!("writing the compiled component: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in compiler: a shell script with `body`.
    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("compiler.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_compiler_that_never_finishes_is_stopped_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let hung = script(dir.path(), "exec sleep 600");
        let err = precompile_in_child(
            &hung,
            b"component",
            100,
            1 << 30,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ChildError::Failed(
                "the compiler process took longer than 0.2 s and was stopped".into()
            )
        );
    }

    #[test]
    fn a_failing_compiler_is_reported_with_its_message_or_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let loud = script(dir.path(), "cat >/dev/null; echo 'no good' >&2; exit 3");
        assert_eq!(
            precompile_in_child(&loud, b"component", 100, 1 << 30, COMPILE_TIMEOUT),
            Err(ChildError::Failed("no good".into()))
        );
        let quiet = script(dir.path(), "cat >/dev/null; exit 3");
        let Err(ChildError::Failed(msg)) =
            precompile_in_child(&quiet, b"component", 100, 1 << 30, COMPILE_TIMEOUT)
        else {
            panic!("a failing compiler succeeded");
        };
        assert!(msg.contains("exit status: 3"), "{msg}");
        let ok = script(dir.path(), "cat; printf artifact");
        assert_eq!(
            precompile_in_child(&ok, b"component-", 100, 1 << 30, COMPILE_TIMEOUT),
            Ok(b"component-artifact".to_vec())
        );
        // Out of memory: the runtime's message, read as the limit it is.
        let starved = script(
            dir.path(),
            "cat >/dev/null; echo 'memory allocation of 147472 bytes failed' >&2; kill -ABRT $$",
        );
        assert_eq!(
            precompile_in_child(&starved, b"component", 100, 1 << 30, COMPILE_TIMEOUT),
            Err(ChildError::Failed(
                "compiling the component needs more memory than the compiler process may use \
                 (1073741824 bytes, policy.compile_memory_bytes)"
                    .into()
            ))
        );
        assert!(matches!(
            precompile_in_child(
                &dir.path().join("missing"),
                b"",
                100,
                1 << 30,
                COMPILE_TIMEOUT
            ),
            Err(ChildError::Spawn(_))
        ));
    }
}
