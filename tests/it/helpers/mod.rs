pub mod cluster;
pub mod db;
pub mod market;
pub mod scripted;
