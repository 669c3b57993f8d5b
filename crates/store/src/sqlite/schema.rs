//! Schema and migrations. `PRAGMA user_version` is the schema version; each migration runs in
//! the same `BEGIN IMMEDIATE` transaction as the version bump, so two processes opening a new
//! file at once cannot both migrate it.

use crate::error::{StoreError, StoreResult};
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: decisions, idempotency, kill switch.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('change_seq', 0);

    -- One row per decision; every status change bumps change_seq so other processes can
    -- refresh their in-memory usage index incrementally.
    CREATE TABLE decisions (
        seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
        id                  TEXT NOT NULL UNIQUE,
        created_at_us       INTEGER NOT NULL,
        updated_at_us       INTEGER NOT NULL,
        agent               TEXT NOT NULL,
        wallet              TEXT NOT NULL,
        department          TEXT,
        chain               TEXT,
        asset               TEXT,
        recipient           TEXT NOT NULL,
        amount              TEXT NOT NULL,
        usd                 TEXT,
        price_usd           TEXT,
        operation           TEXT,
        memo                TEXT,
        merchant            TEXT,
        category            TEXT,
        decision            TEXT NOT NULL,
        tier                TEXT NOT NULL,
        status              TEXT NOT NULL,
        reasons             TEXT NOT NULL,
        headroom            TEXT NOT NULL,
        execute_after_us    INTEGER,
        approval_expires_us INTEGER,
        approver_role       TEXT,
        request_hash        TEXT NOT NULL,
        idempotency_key     TEXT,
        change_seq          INTEGER NOT NULL
    );
    CREATE INDEX decisions_by_change ON decisions (change_seq);
    CREATE INDEX decisions_by_time ON decisions (created_at_us);
    CREATE INDEX decisions_by_agent ON decisions (agent, created_at_us);

    -- Stripe-style idempotency: the first response is kept and replayed.
    CREATE TABLE idempotency (
        agent         TEXT NOT NULL,
        key           TEXT NOT NULL,
        request_hash  TEXT NOT NULL,
        decision_id   TEXT NOT NULL,
        response      TEXT NOT NULL,
        created_at_us INTEGER NOT NULL,
        PRIMARY KEY (agent, key)
    );
    CREATE INDEX idempotency_by_age ON idempotency (created_at_us);

    CREATE TABLE freezes (
        scope        TEXT PRIMARY KEY,
        frozen_by    TEXT NOT NULL,
        reason       TEXT NOT NULL,
        frozen_at_us INTEGER NOT NULL,
        evidence     TEXT
    );

    CREATE TABLE freeze_log (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        scope  TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('freeze', 'unfreeze')),
        actor  TEXT NOT NULL,
        text   TEXT NOT NULL,
        at_us  INTEGER NOT NULL
    );
    "#,
    // 2: execution (signed transactions, nonces) and agent tokens.
    r#"
    ALTER TABLE decisions ADD COLUMN nonce INTEGER;
    ALTER TABLE decisions ADD COLUMN tx_hash TEXT;
    ALTER TABLE decisions ADD COLUMN raw_tx BLOB;
    ALTER TABLE decisions ADD COLUMN fee_cap TEXT;
    ALTER TABLE decisions ADD COLUMN fee_terms TEXT;
    ALTER TABLE decisions ADD COLUMN block INTEGER;
    ALTER TABLE decisions ADD COLUMN fee_paid TEXT;
    ALTER TABLE decisions ADD COLUMN failure TEXT;
    CREATE INDEX decisions_by_status ON decisions (status);
    CREATE UNIQUE INDEX decisions_by_tx_hash ON decisions (tx_hash) WHERE tx_hash IS NOT NULL;

    -- spendguard's own nonce allocator: the next nonce per sending account, and nonces given
    -- out whose transaction was refused (reused first, so no gap stalls later transactions).
    CREATE TABLE nonces (
        chain   TEXT NOT NULL,
        address TEXT NOT NULL,
        next    INTEGER NOT NULL,
        PRIMARY KEY (chain, address)
    );
    CREATE TABLE nonce_holes (
        chain   TEXT NOT NULL,
        address TEXT NOT NULL,
        nonce   INTEGER NOT NULL,
        PRIMARY KEY (chain, address, nonce)
    );

    -- Agent bearer tokens, stored as SHA-256 hashes; revoking stops authentication at once.
    CREATE TABLE agent_tokens (
        token_hash    TEXT PRIMARY KEY,
        agent         TEXT NOT NULL,
        created_at_us INTEGER NOT NULL,
        revoked_at_us INTEGER
    );
    CREATE INDEX agent_tokens_by_agent ON agent_tokens (agent);

    -- Things operators are told about (NOTIFY-tier spends, approval requests, …); alert
    -- channels deliver from here.
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at_us       INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        decision_id TEXT,
        detail      TEXT NOT NULL
    );
    "#,
    // 3: the auditor: outflows seen on chain, how they reconciled, where each chain's watcher is.
    r#"
    CREATE TABLE outflows (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        chain       TEXT NOT NULL,
        block       INTEGER NOT NULL,
        tx_hash     TEXT NOT NULL,
        idx         INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        wallet      TEXT NOT NULL,
        recipient   TEXT,
        asset       TEXT,
        token       TEXT,
        amount      TEXT NOT NULL,
        class       TEXT NOT NULL,
        decision_id TEXT,
        UNIQUE (chain, tx_hash, idx, kind)
    );
    CREATE INDEX outflows_by_block ON outflows (chain, block);
    CREATE TABLE chain_blocks (
        chain  TEXT NOT NULL,
        number INTEGER NOT NULL,
        hash   TEXT NOT NULL,
        PRIMARY KEY (chain, number)
    );
    "#,
    // 4: alert deliveries: one row per (event, channel), every attempt counted.
    r#"
    CREATE TABLE alert_deliveries (
        event_id        INTEGER NOT NULL,
        channel         TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        delivered_at_us INTEGER,
        last_error      TEXT,
        next_attempt_us INTEGER NOT NULL,
        PRIMARY KEY (event_id, channel)
    );
    "#,
    // 5: when a decision was (last) broadcast, from which the deadline of a missing one runs.
    r#"
    ALTER TABLE decisions ADD COLUMN broadcast_at_us INTEGER;
    UPDATE decisions SET broadcast_at_us = updated_at_us WHERE status = 'broadcast';
    "#,
    // 6: signature-indexed chains (Solana): each wallet's watcher cursor, the newest transaction
    // indexed; and how often a decision was re-signed after its transaction expired unsent.
    r#"
    CREATE TABLE wallet_cursors (
        chain     TEXT NOT NULL,
        address   TEXT NOT NULL,
        signature TEXT NOT NULL,
        slot      INTEGER NOT NULL,
        PRIMARY KEY (chain, address)
    );
    ALTER TABLE decisions ADD COLUMN resigned INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: operators. The hash-chained audit log (see audit.rs); the intent hash bound to each
    // decision when it is made, checked at approval and at signing; who approved; operator tokens.
    r#"
    CREATE TABLE audit_log (
        seq         INTEGER PRIMARY KEY,
        at_us       INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        actor       TEXT NOT NULL,
        decision_id TEXT,
        agent       TEXT,
        wallet      TEXT,
        usd         TEXT,
        detail      TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit_log (at_us);
    ALTER TABLE decisions ADD COLUMN intent_hash TEXT;
    ALTER TABLE decisions ADD COLUMN approved_by TEXT;
    ALTER TABLE decisions ADD COLUMN approved_at_us INTEGER;
    ALTER TABLE outflows ADD COLUMN seen_at_us INTEGER;
    CREATE TABLE operator_tokens (
        token_hash    TEXT PRIMARY KEY,
        operator      TEXT NOT NULL,
        created_at_us INTEGER NOT NULL,
        revoked_at_us INTEGER
    );
    "#,
    // 8: the intent hash binds what reaches the chain: the sender's address, the token and its
    // decimals as they were when the spend was decided. Indices for the auditor's and the
    // reports' reads.
    r#"
    ALTER TABLE decisions ADD COLUMN from_address TEXT;
    ALTER TABLE decisions ADD COLUMN token TEXT;
    ALTER TABLE decisions ADD COLUMN decimals INTEGER;
    CREATE INDEX outflows_by_decision ON outflows (decision_id) WHERE decision_id IS NOT NULL;
    CREATE INDEX outflows_by_seen ON outflows (seen_at_us);
    CREATE INDEX events_by_time ON events (at_us);
    CREATE INDEX events_by_kind ON events (kind, id);
    "#,
    // 9: which chain each configured chain is: the hash of its first block, as first seen.
    r#"
    CREATE TABLE chain_identity (
        chain         TEXT PRIMARY KEY,
        genesis       TEXT NOT NULL,
        first_seen_us INTEGER NOT NULL
    );
    "#,
    // 10: live prices: where each decision's price came from and when it was published.
    r#"
    ALTER TABLE decisions ADD COLUMN price_source TEXT;
    ALTER TABLE decisions ADD COLUMN price_as_of_us INTEGER;
    "#,
    // 11: money that came into registered wallets, with their balances around it.
    r#"
    CREATE TABLE inflows (
        id             INTEGER PRIMARY KEY,
        chain          TEXT NOT NULL,
        block          INTEGER NOT NULL,
        tx_hash        TEXT NOT NULL,
        idx            INTEGER NOT NULL,
        kind           TEXT NOT NULL,
        wallet         TEXT NOT NULL,
        sender         TEXT NOT NULL,
        asset          TEXT,
        token          TEXT,
        amount         TEXT NOT NULL,
        balance_before TEXT,
        balance_after  TEXT,
        expected       INTEGER NOT NULL,
        seen_at_us     INTEGER NOT NULL,
        UNIQUE (chain, tx_hash, idx, kind, wallet)
    );
    CREATE INDEX inflows_by_block ON inflows (chain, block);
    CREATE INDEX inflows_by_seen ON inflows (seen_at_us);
    CREATE TABLE balance_checkpoints (
        chain   TEXT NOT NULL,
        wallet  TEXT NOT NULL,
        asset   TEXT NOT NULL,
        block   INTEGER NOT NULL,
        balance TEXT NOT NULL,
        PRIMARY KEY (chain, wallet, asset, block)
    );
    "#,
    // 12: authorizations of external wallets' spends: the signed token handed to the agent,
    // its validity, and how it ended (consumed by a payment on chain, expired, revoked).
    r#"
    CREATE TABLE authorizations (
        decision_id  TEXT PRIMARY KEY,
        wallet       TEXT NOT NULL,
        token        TEXT NOT NULL,
        issued_at_us INTEGER NOT NULL,
        expires_at_us INTEGER NOT NULL,
        state        TEXT NOT NULL,
        ended_at_us  INTEGER,
        ended_by     TEXT
    );
    CREATE INDEX authorizations_open ON authorizations (wallet, issued_at_us) WHERE state = 'open';
    "#,
    // 13: x402 payments: the requirement a decision pays, and EIP-3009 authorizations found on
    // chain by their nonce.
    r#"
    ALTER TABLE decisions ADD COLUMN x402 TEXT;
    ALTER TABLE authorizations ADD COLUMN kind TEXT NOT NULL DEFAULT 'external';
    ALTER TABLE authorizations ADD COLUMN nonce TEXT;
    CREATE UNIQUE INDEX authorizations_by_nonce ON authorizations (wallet, nonce) WHERE nonce IS NOT NULL;
    "#,
    // 14: an x402 authorization cancelled on chain: the wallet's `cancelAuthorization`
    // transaction, stored before it is sent (its fee is booked with the decision).
    r#"
    ALTER TABLE authorizations ADD COLUMN cancel_tx TEXT;
    ALTER TABLE authorizations ADD COLUMN cancel_raw BLOB;
    CREATE INDEX authorizations_by_cancel_tx ON authorizations (cancel_tx) WHERE cancel_tx IS NOT NULL;
    "#,
    // 15: a Solana rollback unwinds a watcher cursor to a slot with no signature (every
    // transaction above it is listed again): the signature becomes optional.
    r#"
    CREATE TABLE wallet_cursors_15 (
        chain     TEXT NOT NULL,
        address   TEXT NOT NULL,
        signature TEXT,
        slot      INTEGER NOT NULL,
        PRIMARY KEY (chain, address)
    );
    INSERT INTO wallet_cursors_15 (chain, address, signature, slot) SELECT chain, address, signature, slot FROM wallet_cursors;
    DROP TABLE wallet_cursors;
    ALTER TABLE wallet_cursors_15 RENAME TO wallet_cursors;
    "#,
    // 16: leases, so that of several daemons sharing the ledger one watches each chain.
    r#"
    CREATE TABLE leases (
        name          TEXT PRIMARY KEY,
        holder        TEXT NOT NULL,
        expires_at_us INTEGER NOT NULL
    );
    "#,
    // 17: decisions numbered without AUTOINCREMENT, which rewrote `sqlite_sequence` — one more
    // page in every decision's commit. Decisions are never deleted, so the next number is the
    // highest plus one either way. The table is rebuilt with the same columns and indices.
    r#"
    CREATE TABLE decisions_17 (
        seq                 INTEGER PRIMARY KEY,
        id                  TEXT NOT NULL UNIQUE,
        created_at_us       INTEGER NOT NULL,
        updated_at_us       INTEGER NOT NULL,
        agent               TEXT NOT NULL,
        wallet              TEXT NOT NULL,
        department          TEXT,
        chain               TEXT,
        asset               TEXT,
        recipient           TEXT NOT NULL,
        amount              TEXT NOT NULL,
        usd                 TEXT,
        price_usd           TEXT,
        operation           TEXT,
        memo                TEXT,
        merchant            TEXT,
        category            TEXT,
        decision            TEXT NOT NULL,
        tier                TEXT NOT NULL,
        status              TEXT NOT NULL,
        reasons             TEXT NOT NULL,
        headroom            TEXT NOT NULL,
        execute_after_us    INTEGER,
        approval_expires_us INTEGER,
        approver_role       TEXT,
        request_hash        TEXT NOT NULL,
        idempotency_key     TEXT,
        change_seq          INTEGER NOT NULL,
        nonce               INTEGER,
        tx_hash             TEXT,
        raw_tx              BLOB,
        fee_cap             TEXT,
        fee_terms           TEXT,
        block               INTEGER,
        fee_paid            TEXT,
        failure             TEXT,
        broadcast_at_us     INTEGER,
        resigned            INTEGER NOT NULL DEFAULT 0,
        intent_hash         TEXT,
        approved_by         TEXT,
        approved_at_us      INTEGER,
        from_address        TEXT,
        token               TEXT,
        decimals            INTEGER,
        price_source        TEXT,
        price_as_of_us      INTEGER,
        x402                TEXT
    );
    INSERT INTO decisions_17 SELECT seq, id, created_at_us, updated_at_us, agent, wallet, department, chain, asset,
        recipient, amount, usd, price_usd, operation, memo, merchant, category, decision, tier, status, reasons,
        headroom, execute_after_us, approval_expires_us, approver_role, request_hash, idempotency_key, change_seq,
        nonce, tx_hash, raw_tx, fee_cap, fee_terms, block, fee_paid, failure, broadcast_at_us, resigned,
        intent_hash, approved_by, approved_at_us, from_address, token, decimals, price_source, price_as_of_us, x402
        FROM decisions;
    DROP TABLE decisions;
    ALTER TABLE decisions_17 RENAME TO decisions;
    CREATE INDEX decisions_by_change ON decisions (change_seq);
    CREATE INDEX decisions_by_time ON decisions (created_at_us);
    CREATE INDEX decisions_by_agent ON decisions (agent, created_at_us);
    CREATE INDEX decisions_by_status ON decisions (status);
    CREATE UNIQUE INDEX decisions_by_tx_hash ON decisions (tx_hash) WHERE tx_hash IS NOT NULL;
    "#,
];

/// The newest schema version this build knows.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if found == 0 && tables > 0 {
        return Err(StoreError::NotALedger(tx.path().unwrap_or_default().into()));
    }
    if found > VERSION {
        return Err(StoreError::SchemaTooNew { found, supported: VERSION });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection) -> Vec<(String, String, bool, Option<String>)> {
        let mut stmt =
            conn.prepare("SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info('decisions')").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn indices(conn: &Connection) -> Vec<(String, Option<String>)> {
        let mut stmt = conn
            .prepare(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'decisions' ORDER BY name",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// Migration 17 keeps every decision, its number, every column and every index; only the
    /// AUTOINCREMENT goes, and the next decision is numbered after the highest.
    #[test]
    fn decisions_rebuilt_without_autoincrement_keep_their_rows_columns_and_indices() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..16] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 16).unwrap();
        let (columns_before, indices_before) = (columns(&conn), indices(&conn));
        let insert = "INSERT INTO decisions (seq, id, created_at_us, updated_at_us, agent, wallet, recipient, amount,
                decision, tier, status, reasons, headroom, request_hash, change_seq, tx_hash, x402)
            VALUES (?1, ?2, 1, 2, 'bot', 'hot', '0xabc', '1.5', 'allow', 'instant', 'confirmed', '[]', '[]', 'h', 3, ?3, ?4)";
        conn.execute(insert, rusqlite::params![7, "dec_a", "0xtx", r#"{"scheme":"exact"}"#]).unwrap();
        conn.execute(insert, rusqlite::params![41, "dec_b", None::<String>, None::<String>]).unwrap();

        migrate(&mut conn).unwrap();

        assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), VERSION);
        assert_eq!(columns(&conn), columns_before, "same columns, types, NOT NULLs and defaults, in order");
        assert_eq!(indices(&conn), indices_before, "same indices");
        let table: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'decisions'", [], |r| r.get(0)).unwrap();
        assert!(!table.contains("AUTOINCREMENT"), "{table}");
        let kept: Vec<(i64, String, Option<String>, Option<String>)> = conn
            .prepare("SELECT seq, id, tx_hash, x402 FROM decisions ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            vec![
                (7, "dec_a".into(), Some("0xtx".into()), Some(r#"{"scheme":"exact"}"#.into())),
                (41, "dec_b".into(), None, None)
            ]
        );
        let next: i64 = conn
            .query_row(
                "INSERT INTO decisions (id, created_at_us, updated_at_us, agent, wallet, recipient, amount, decision,
                    tier, status, reasons, headroom, request_hash, change_seq)
                 VALUES ('dec_c', 3, 3, 'bot', 'hot', '0xabc', '2', 'allow', 'instant', 'reserved', '[]', '[]', 'h', 4)
                 RETURNING seq",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(next, 42);
        let duplicate = conn.execute(insert, rusqlite::params![50, "dec_a", None::<String>, None::<String>]);
        assert!(duplicate.is_err(), "ids stay unique");
    }
}
