pub mod fixture;

mod backup_restore;
mod cli;
mod conformance;
mod copy;
mod encrypted;
mod encryption_keys;
mod faults;
mod held;
mod hostile;
mod hostile_crypto;
mod layers;
mod live;
mod prune;
mod restore_safety;
mod sources;
mod stores;
mod workdir;
