//! Integration tests against real PostgreSQL (see `meetingd_testkit::cluster` for which server).

mod api;
mod claims;
mod cli;
mod daemon;
mod google;
mod helpers;
mod jwt;
mod leftovers;
mod maintenance;
mod migrations;
mod monitor;
mod moved_tokens;
mod odd_rows;
mod ops;
mod pgbouncer;
mod privileges;
mod rates;
mod teams;
mod tls;
mod traps;
mod trigger;
mod ui;
mod webhooks;
mod worker;
mod zoom;
mod zoom_webhook;
