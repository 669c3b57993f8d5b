//! The PostgreSQL engine, for several daemons sharing one ledger (issue 18). So far: its
//! schema ([`schema`]), kept column for column with the SQLite engine's; the engine itself
//! runs the ledger's logic through `sql` like the SQLite one.

pub mod schema;
