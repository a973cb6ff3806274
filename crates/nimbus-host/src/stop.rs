//! Stopping services: waiting until they are gone, or in the background, or when a revision
//! that is not (yet) kept is dropped.
use std::sync::Arc;

use nimbus_services::Service;

/// Stops services and waits until they are gone (each drains, then SIGTERM, grace, SIGKILL).
pub async fn stop_services(services: &[Arc<Service>]) {
    futures::future::join_all(services.iter().map(|s| s.shutdown())).await;
}

/// Stops services in the background (each drains, then SIGTERM, grace, SIGKILL).
pub fn stop_in_background(services: Vec<Arc<Service>>) {
    for service in services {
        tokio::spawn(async move { service.shutdown().await });
    }
}

/// Services started for a revision that is not (yet) kept: stopped in the background when
/// dropped (an error, a cancelled deploy), unless disarmed.
#[derive(Debug, Default)]
pub struct StopOnDrop(pub Vec<Arc<Service>>);

impl StopOnDrop {
    /// Keeps the services running; returns them.
    pub fn disarm(mut self) -> Vec<Arc<Service>> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        stop_in_background(std::mem::take(&mut self.0));
    }
}
