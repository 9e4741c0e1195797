//! The reference marketplace schema and scratch databases beside a configured one.
//!
//! Owns the marketplace fixture (`sql/fixtures/marketplace.sql`: users, services, bookings, as the
//! marketplace keeps them) and how a connection string is pointed at another database on the same
//! server. `meetingd demo` uses both; so do the test harness and the tools. It must not touch a
//! database itself: callers create and drop what they name.

/// The reference marketplace schema (users, services, bookings).
pub const MARKETPLACE_FIXTURE: &str = include_str!("../sql/fixtures/marketplace.sql");

/// A connection string pointing at another database on the same server.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if matches!(u.scheme(), "postgres" | "postgresql") => {
            u.set_path(&format!("/{dbname}"));
            u.to_string()
        }
        // key=value form: a later key wins.
        _ => format!("{url} dbname={dbname}"),
    }
}
