pub mod fixture;

mod backup_restore;
mod cli;
mod conformance;
mod held;
mod hostile;
mod live;
mod prune;
