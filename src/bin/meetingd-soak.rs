//! Chaos soak for meetingd (being written).
fn main() {}
