pub mod fixture;

mod backup_restore;
mod cli;
mod hostile;
mod live;
