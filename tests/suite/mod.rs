pub mod fixture;

mod backup_restore;
mod cli;
mod conformance;
mod hostile;
mod live;
