//! What only the integration tests use: the scripted meeting platform. The rest of the harness
//! (clusters, databases, the fake Google, daemons, seed data) is the `meetingd-testkit` crate.

pub mod scripted;
