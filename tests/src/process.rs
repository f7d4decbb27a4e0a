//! The mesh's binaries as child processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Returns the path of a binary of this workspace, built beside the test
/// executable (in `deps/` of the profile folder) or beside this crate's own
/// binaries by `cargo test --workspace` or `cargo build --bins`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("executable folder");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().expect("target profile directory");
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found; run `cargo test --workspace` so that it is built",
        path.display()
    );
    path
}

/// A running child process whose stderr goes to a log file. It is killed
/// when dropped.
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args`, logging at info to `log_dir/name.log`.
    pub fn spawn(name: &str, binary: &Path, args: &[String], log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("creating process log");
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", binary.display()));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub async fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait_exit(limit).await
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
