pub mod certs;
pub mod cluster;
pub mod db;
pub mod fake_google;
pub mod market;
pub mod pgbouncer;
pub mod scripted;

/// A child process that is killed (SIGKILL) when dropped, so a failing test leaves no daemon behind.
pub struct Running(pub std::process::Child);

impl Running {
    /// SIGKILL now and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
