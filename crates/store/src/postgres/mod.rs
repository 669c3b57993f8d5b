//! What is PostgreSQL's own in the ledger: its schema and migrations ([`schema`]), kept column
//! for column with the SQLite engine's. The ledger's logic runs on it through `sql`, in the
//! same engine ([`crate::SqlStore::open_postgres`]).

pub mod schema;
