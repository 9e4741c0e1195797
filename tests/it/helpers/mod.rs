pub mod cluster;
pub mod db;
pub mod fake_google;
pub mod market;
pub mod scripted;
