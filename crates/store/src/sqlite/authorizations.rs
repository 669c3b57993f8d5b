//! [`AuthorizationStore`] on SQLite: external wallets' authorizations — issued over the
//! decision's intent hash in the transaction that stores them, consumed by the reconciler
//! (`outflows.rs`), expired here, revoked by freezes (`freezes.rs`).

use super::rows::{corrupt, decimal_col, decimal_col_opt, decision_row, money, time_col, time_col_opt, to_us};
use super::signing::check_intent;
use super::{SqlStore, Writer};
use crate::api::AuthorizationStore;
use crate::error::StoreError;
use crate::error::StoreResult;
use crate::records::{
    Account, AuthorizationKind, AuthorizationRecord, AuthorizationRequest, AuthorizationState, Authorizing, SignWith,
    SignedRecord,
};
use crate::sql::{params, Connection, Row};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_core::reconcile::OpenAuthorization;
use spendguard_core::SpendStatus;

/// The columns [`authorization_from_row`] reads: the authorization joined to its decision.
const COLUMNS: &str =
    "a.decision_id, d.agent, a.wallet, d.chain, d.from_address, d.asset, d.recipient, d.amount, d.usd,
    a.token, a.issued_at_us, a.expires_at_us, a.state, a.ended_at_us, a.ended_by, a.kind, a.nonce, d.x402";

fn authorization_from_row(r: &Row<'_>) -> crate::sql::Result<AuthorizationRecord> {
    let state: String = r.get(12)?;
    Ok(AuthorizationRecord {
        decision_id: r.get(0)?,
        agent: r.get(1)?,
        wallet: r.get(2)?,
        chain: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
        from: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        asset: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        recipient: r.get(6)?,
        amount: decimal_col(r, 7)?,
        usd: decimal_col_opt(r, 8)?,
        token: r.get(9)?,
        issued_at: time_col(r, 10)?,
        expires_at: time_col(r, 11)?,
        state: AuthorizationState::parse(&state)
            .ok_or_else(|| r.bad(12, format!("unknown authorization state {state:?}")))?,
        ended_at: time_col_opt(r, 13)?,
        ended_by: r.get(14)?,
        kind: {
            let kind: String = r.get(15)?;
            AuthorizationKind::parse(&kind).ok_or_else(|| r.bad(15, format!("unknown authorization kind {kind:?}")))?
        },
        nonce: r.get(16)?,
        resource: r
            .get::<_, Option<String>>(17)?
            .and_then(|text| serde_json::from_str::<crate::records::X402Request>(&text).ok())
            .and_then(|x| x.url().map(str::to_string)),
    })
}

fn query(conn: &Connection, filter: &str, args: crate::sql::Params<'_>) -> StoreResult<Vec<AuthorizationRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM authorizations a JOIN decisions d ON d.id = a.decision_id {filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(args, authorization_from_row)?;
    rows.collect::<Result<_, _>>().map_err(corrupt("authorizations", filter))
}

pub(crate) fn load_authorization(conn: &Connection, id: &str) -> StoreResult<Option<AuthorizationRecord>> {
    Ok(query(conn, "WHERE a.decision_id = ?1", params![id])?.pop())
}

#[async_trait]
impl AuthorizationStore for SqlStore {
    async fn authorize(&self, id: &str, request: AuthorizationRequest, at: DateTime<Utc>) -> StoreResult<Authorizing> {
        let id = id.to_string();
        self.write(move |w| w.authorize(&id, request, at)).await
    }

    async fn authorization(&self, id: &str) -> StoreResult<Option<AuthorizationRecord>> {
        let id = id.to_string();
        self.read(move |c| load_authorization(c, &id)).await
    }

    async fn open_authorizations(&self) -> StoreResult<Vec<AuthorizationRecord>> {
        self.read(|c| query(c, "WHERE a.state = 'open' ORDER BY a.issued_at_us, a.decision_id", params![])).await
    }

    async fn authorizations_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<AuthorizationRecord>> {
        let (from, to) = (to_us(from), to_us(to));
        self.read(move |c| {
            query(
                c,
                "WHERE a.issued_at_us >= ?1 AND a.issued_at_us < ?2 ORDER BY a.issued_at_us, a.decision_id",
                params![from, to],
            )
        })
        .await
    }

    async fn sign_cancellation(
        &self,
        id: &str,
        account: Account,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<SignedRecord> {
        let id = id.to_string();
        self.write(move |w| w.sign_cancellation(&id, &account, sign, at)).await
    }

    async fn cancellation_landed(
        &self,
        id: &str,
        success: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<AuthorizationRecord> {
        let id = id.to_string();
        self.write(move |w| w.cancellation_landed(&id, success, at)).await
    }

    async fn expire_authorizations(
        &self,
        chain: &str,
        deadline: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<AuthorizationRecord>> {
        let chain = chain.to_string();
        self.write(move |w| w.expire_authorizations(&chain, deadline, at)).await
    }
}

impl Writer {
    fn authorize(&mut self, id: &str, request: AuthorizationRequest, at: DateTime<Utc>) -> StoreResult<Authorizing> {
        let AuthorizationRequest { kind, intent, expires_at, fee_cap, issue } = request;
        if let Some(existing) = load_authorization(&self.conn, id)? {
            return Ok(Authorizing::Authorized(Box::new(existing)));
        }
        let current = decision_row(&self.conn, id)?;
        if current.status != SpendStatus::Reserved {
            return Ok(Authorizing::NotExecutable(current.status));
        }
        // As for signing: a freeze that landed after the reservation (or the approval) stops it.
        if let Some(frozen) = self.freeze_covering(&current) {
            let released =
                self.set_status(id, SpendStatus::Released, at, Some(&format!("not authorized: {frozen}")))?;
            return Ok(Authorizing::NotExecutable(released.status));
        }
        check_intent(&current, &intent)?;
        let bound = current.intent_hash.clone().unwrap_or_default();
        // An error here rolls the job's savepoint back: no token exists that is not stored.
        let issued = issue(&bound)?;
        self.conn.execute(
            "INSERT INTO authorizations (decision_id, wallet, token, issued_at_us, expires_at_us, state, kind, nonce)
             VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7)",
            params![id, current.wallet, issued.token, to_us(at), to_us(expires_at), kind.as_str(), issued.nonce],
        )?;
        self.conn.execute("UPDATE decisions SET fee_cap = ?1 WHERE id = ?2", params![fee_cap.map(money), id])?;
        self.set_status(id, SpendStatus::Authorized, at, None)?;
        self.audit_decision(
            "authorized",
            "spendguard",
            &current,
            serde_json::json!({
                "kind": kind.as_str(),
                "expires_at": expires_at.to_rfc3339(),
                "intent_hash": bound,
                "fee_cap": fee_cap.map(money),
                "nonce": issued.nonce,
            }),
            at,
        )?;
        let stored = load_authorization(&self.conn, id)?;
        let stored = stored.ok_or_else(|| crate::StoreError::UnknownDecision(id.to_string()))?;
        Ok(Authorizing::Authorized(Box::new(stored)))
    }

    fn expire_authorizations(
        &mut self,
        chain: &str,
        deadline: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<AuthorizationRecord>> {
        let due = query(
            &self.conn,
            "WHERE a.state = 'open' AND d.chain = ?1 AND a.expires_at_us < ?2 ORDER BY a.issued_at_us",
            params![chain, to_us(deadline)],
        )?;
        let mut expired = vec![];
        for a in due {
            let why = format!("authorization expired at {} without a payment on chain", a.expires_at.to_rfc3339());
            self.end_authorization(&a.decision_id, AuthorizationState::Expired, &why, at)?;
            expired.extend(load_authorization(&self.conn, &a.decision_id)?);
        }
        Ok(expired)
    }

    fn sign_cancellation(
        &mut self,
        id: &str,
        account: &Account,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<SignedRecord> {
        let a = load_authorization(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        let stored: Option<(String, Vec<u8>)> = self.conn.query_row(
            "SELECT cancel_tx, cancel_raw FROM authorizations WHERE decision_id = ?1",
            params![id],
            |r| Ok(r.get::<_, Option<String>>(0)?.zip(r.get::<_, Option<Vec<u8>>>(1)?)),
        )?;
        if let Some((hash, raw)) = stored {
            return Ok(SignedRecord { hash, raw, sequence: None, fee_cap: Decimal::ZERO, fee_terms: String::new() });
        }
        if a.kind != AuthorizationKind::X402 || a.state != AuthorizationState::Open {
            let d = decision_row(&self.conn, id)?;
            return Err(StoreError::WrongStatus {
                id: id.to_string(),
                status: d.status,
                failure: a.ended_by,
                needs: "only an open x402 authorization is cancelled on chain",
            });
        }
        let sequence = self.allocate_nonce(account)?;
        // An error here rolls the job's savepoint back, nonce allocation included.
        let signed = sign(Some(sequence))?;
        self.conn.execute(
            "UPDATE authorizations SET cancel_tx = ?1, cancel_raw = ?2 WHERE decision_id = ?3",
            params![signed.hash, signed.raw, id],
        )?;
        let d = decision_row(&self.conn, id)?;
        self.audit_decision(
            "authorization_cancel_signed",
            "spendguard",
            &d,
            serde_json::json!({ "tx_hash": signed.hash, "nonce": sequence, "authorization_nonce": a.nonce }),
            at,
        )?;
        Ok(signed)
    }

    fn cancellation_landed(&mut self, id: &str, success: bool, at: DateTime<Utc>) -> StoreResult<AuthorizationRecord> {
        let a = load_authorization(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if success && a.state == AuthorizationState::Open {
            let tx: Option<String> = self.conn.query_row(
                "SELECT cancel_tx FROM authorizations WHERE decision_id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            let why = format!("authorization cancelled on chain by {}", tx.unwrap_or_default());
            self.end_authorization(id, AuthorizationState::Revoked, &why, at)?;
        }
        load_authorization(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))
    }

    /// Ends an open authorization that was not paid (`Expired` or `Revoked`): its decision is
    /// released and its budget returned.
    pub(crate) fn end_authorization(
        &mut self,
        id: &str,
        state: AuthorizationState,
        why: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE authorizations SET state = ?1, ended_at_us = ?2, ended_by = ?3 WHERE decision_id = ?4 AND state = 'open'",
            params![state.as_str(), to_us(at), why, id],
        )?;
        self.set_status(id, SpendStatus::Released, at, Some(why))?;
        Ok(())
    }

    /// The open authorizations of external wallet `wallet`, oldest first, as the reconciler
    /// matches its transfers.
    pub(crate) fn open_authorizations_of(&self, wallet: &str) -> StoreResult<Vec<OpenAuthorization>> {
        Ok(query(
            &self.conn,
            "WHERE a.state = 'open' AND a.kind = 'external' AND a.wallet = ?1 ORDER BY a.issued_at_us, d.seq",
            params![wallet],
        )?
        .into_iter()
        .map(|a| OpenAuthorization {
            decision_id: a.decision_id,
            asset: a.asset,
            recipient: a.recipient,
            amount: a.amount,
        })
        .collect())
    }

    /// A payment on chain consumed decision `id`'s authorization: the decision is confirmed in
    /// `block`. With `owns_tx` (an external wallet's own transaction) the transaction becomes the
    /// decision's, so that its fee is booked with it; an x402 settlement is named on the
    /// authorization only, since one facilitator transaction may settle several decisions.
    pub(crate) fn consume_authorization(
        &mut self,
        id: &str,
        tx_hash: &str,
        block: u64,
        owns_tx: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE authorizations SET state = 'consumed', ended_at_us = ?1, ended_by = ?2 WHERE decision_id = ?3",
            params![to_us(at), tx_hash, id],
        )?;
        self.conn.execute(
            "UPDATE decisions SET block = ?1, tx_hash = CASE WHEN ?2 THEN ?3 ELSE tx_hash END WHERE id = ?4",
            params![block as i64, owns_tx, tx_hash, id],
        )?;
        self.set_status(id, SpendStatus::Confirmed, at, None)?;
        Ok(())
    }

    /// A reorg orphaned the block that paid decision `id`: its authorization is open again (the
    /// payment may land again, in the new chain) and the decision authorized.
    pub(crate) fn reopen_authorization(&mut self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let reopened = self.conn.execute(
            "UPDATE authorizations SET state = 'open', ended_at_us = NULL, ended_by = NULL
             WHERE decision_id = ?1 AND state = 'consumed'",
            params![id],
        )? == 1;
        if reopened {
            self.set_status(id, SpendStatus::Authorized, at, None)?;
            self.conn.execute("UPDATE decisions SET block = NULL, tx_hash = NULL WHERE id = ?1", params![id])?;
        }
        Ok(reopened)
    }

    /// The x402 authorization of `wallet` with EIP-3009 nonce `nonce`, whatever its state.
    pub(crate) fn x402_authorization(&self, wallet: &str, nonce: &str) -> StoreResult<Option<AuthorizationRecord>> {
        Ok(query(
            &self.conn,
            "WHERE a.kind = 'x402' AND a.wallet = ?1 AND a.nonce = ?2",
            params![wallet, nonce.to_ascii_lowercase()],
        )?
        .pop())
    }

    /// Revokes the open external-wallet authorizations a new freeze covers; returns how many.
    /// x402 authorizations stay: the signed payment is in the server's hands and may still be
    /// settled, so its budget stays held until it is, or its `validBefore` has passed.
    pub(crate) fn revoke_authorizations(&mut self, freeze: &spendguard_core::Freeze) -> StoreResult<usize> {
        let open = query(&self.conn, "WHERE a.state = 'open' AND a.kind = 'external'", params![])?;
        let mut revoked = 0;
        for a in open {
            let covered = match (self.model.agent(&a.agent), self.model.wallet(&a.wallet)) {
                (Some(agent), Some(wallet)) => {
                    spendguard_core::freeze::covering(std::slice::from_ref(freeze), agent, wallet).is_some()
                }
                _ => true,
            };
            if covered {
                let why = format!("authorization revoked: {}", freeze.describe());
                self.end_authorization(&a.decision_id, AuthorizationState::Revoked, &why, freeze.frozen_at)?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}
