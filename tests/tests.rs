//! rockup's integration tests: one binary, one module per area. The fixture builds
//! a real RocksDB database with external files; assertions compare content.

mod suite;
