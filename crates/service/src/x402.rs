//! x402 (HTTP 402) payments: reading a server's `PaymentRequired` challenge, choosing the first
//! requirement the wallet can pay (scheme `exact` on a configured EVM chain, in a configured
//! token), and writing the `PaymentPayload` whose base64 is the `PAYMENT-SIGNATURE` header
//! (version 1: `X-PAYMENT`). What is signed is exactly the evaluated amount, payee, token and
//! chain; the signature itself is the EVM client's (`sign_transfer_authorization`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use spendguard_config::Config;
use spendguard_core::model::{Asset, ChainKind, Wallet};
use spendguard_store::X402Request;

/// Most bytes of a challenge accepted (servers send a few hundred).
pub const CHALLENGE_MAX: usize = 64 * 1024;

/// A requirement the wallet can pay, with what the policy evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payable {
    /// What is recorded with the decision and echoed in the payload.
    pub request: X402Request,
    /// The asset paid.
    pub asset: Asset,
    /// Amount in asset units.
    pub amount: Decimal,
    /// Payee (canonical).
    pub pay_to: String,
    /// The resource URL's host, for recipient rules naming a `domain`.
    pub domain: Option<String>,
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// An integer given as a JSON string or number.
fn integer(v: &Value, key: &str) -> Option<u128> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        Value::Number(n) => n.as_u64().map(u128::from),
        _ => None,
    }
}

/// `amount` in base units of an asset with `decimals`, when it is a whole number of them.
pub fn base_units(amount: Decimal, decimals: u32) -> Option<u128> {
    use rust_decimal::prelude::ToPrimitive as _;
    let scaled = amount.checked_mul(Decimal::from_i128_with_scale(10i128.checked_pow(decimals)?, 0))?;
    (scaled.fract().is_zero() && !scaled.is_sign_negative()).then(|| scaled.to_u128()).flatten()
}

/// The host of a resource URL, lower case.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Why one requirement cannot be paid from `wallet`, or what paying it means.
fn judge(config: &Config, wallet: &Wallet, version: u8, req: &Value, resource: &Value) -> Result<Payable, String> {
    let model = &config.model;
    let scheme = text(req, "scheme").unwrap_or("?");
    if scheme != "exact" {
        return Err(format!("scheme {scheme:?} is not supported (only \"exact\")"));
    }
    let network = text(req, "network").unwrap_or("?");
    let chain_id: u64 = network
        .strip_prefix("eip155:")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("network {network:?} is not an EVM chain as eip155:<chain id>"))?;
    let chain = config
        .chains
        .iter()
        .find(|c| c.kind == ChainKind::Evm && c.chain_id == Some(chain_id))
        .ok_or_else(|| format!("network {network} is not a configured chain"))?;
    if chain.id != wallet.chain {
        return Err(format!(
            "network {network} is chain {}, and wallet {} is on {}",
            chain.id, wallet.id, wallet.chain
        ));
    }
    let token = text(req, "asset").unwrap_or("?");
    let token =
        ChainKind::Evm.normalize_address(token).map_err(|_| format!("asset {token:?} is not a token address"))?;
    let asset = model
        .assets_on(&chain.id)
        .find(|a| a.token.as_deref() == Some(token.as_str()))
        .cloned()
        .ok_or_else(|| format!("token {token} is not a configured asset on {}", chain.id))?;
    let amount_key = if version == 1 { "maxAmountRequired" } else { "amount" };
    let base_units = integer(req, amount_key)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{amount_key} is not a positive integer of base units"))?;
    let amount = Decimal::from_i128_with_scale(
        i128::try_from(base_units).map_err(|_| format!("{amount_key} is too large"))?,
        asset.decimals,
    );
    let pay_to = text(req, "payTo").unwrap_or("?");
    let pay_to = ChainKind::Evm.normalize_address(pay_to).map_err(|e| format!("payTo: {e}"))?;
    let max_timeout_seconds = integer(req, "maxTimeoutSeconds")
        .filter(|t| *t > 0)
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| "maxTimeoutSeconds is not a positive integer".to_string())?;
    let extra = req.get("extra").cloned().unwrap_or(Value::Null);
    let (Some(domain_name), Some(domain_version)) = (text(&extra, "name"), text(&extra, "version")) else {
        return Err("extra.name and extra.version (the token's EIP-712 domain) are missing".into());
    };
    let request = X402Request {
        version,
        accepted: req.clone(),
        resource: resource.clone(),
        domain_name: domain_name.to_string(),
        domain_version: domain_version.to_string(),
        max_timeout_seconds,
    };
    let domain = request.url().and_then(url_host);
    Ok(Payable { request, asset, amount: amount.normalize(), pay_to, domain })
}

/// The first requirement of `challenge` that `wallet` can pay; otherwise why each cannot be.
pub fn choose(config: &Config, wallet: &Wallet, challenge: &Value) -> Result<Payable, String> {
    let version = match challenge.get("x402Version").and_then(Value::as_u64) {
        Some(1) => 1,
        Some(2) => 2,
        _ => return Err("x402Version is not 1 or 2".into()),
    };
    let accepts = challenge.get("accepts").and_then(Value::as_array).filter(|a| !a.is_empty());
    let accepts = accepts.ok_or_else(|| "accepts[] is missing or empty".to_string())?;
    let mut why = vec![];
    for (i, req) in accepts.iter().enumerate() {
        let resource = match version {
            2 => challenge.get("resource").cloned().unwrap_or(Value::Null),
            _ => json!({
                "url": text(req, "resource").unwrap_or_default(),
                "description": text(req, "description").unwrap_or_default(),
                "mimeType": text(req, "mimeType").unwrap_or_default(),
            }),
        };
        match judge(config, wallet, version, req, &resource) {
            Ok(p) => return Ok(p),
            Err(e) => why.push(format!("accepts[{i}]: {e}")),
        }
    }
    Err(why.join("; "))
}

/// The EIP-3009 authorization as the payload carries it (amounts and times as strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAuthorization {
    /// Payer.
    pub from: String,
    /// Payee.
    pub to: String,
    /// Base units.
    pub value: String,
    /// Unix time.
    pub valid_after: String,
    /// Unix time.
    pub valid_before: String,
    /// 32 bytes, hex.
    pub nonce: String,
}

/// The `PaymentPayload` (v2: `{x402Version, resource, accepted, payload}`; v1: `{x402Version,
/// scheme, network, payload}`) as the base64 the header carries.
pub fn payment_header(request: &X402Request, authorization: &PaymentAuthorization, signature: &str) -> String {
    let payload = json!({ "signature": signature, "authorization": authorization });
    let body = match request.version {
        1 => json!({
            "x402Version": 1,
            "scheme": request.accepted.get("scheme"),
            "network": request.accepted.get("network"),
            "payload": payload,
        }),
        _ => json!({
            "x402Version": 2,
            "resource": request.resource,
            "accepted": request.accepted,
            "payload": payload,
        }),
    };
    STANDARD.encode(body.to_string())
}

/// The authorization inside a header [`payment_header`] wrote.
pub fn authorization_in(header: &str) -> Option<PaymentAuthorization> {
    let body: Value = serde_json::from_slice(&STANDARD.decode(header).ok()?).ok()?;
    serde_json::from_value(body.get("payload")?.get("authorization")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_resource_urls() {
        assert_eq!(url_host("https://API.Weather.example:8443/v1?q=1").as_deref(), Some("api.weather.example"));
        assert_eq!(url_host("http://user@127.0.0.1:9000/x").as_deref(), Some("127.0.0.1"));
        assert_eq!(url_host("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(url_host("").as_deref(), None);
    }

    #[test]
    fn a_header_round_trips_its_authorization() {
        let request = X402Request {
            version: 2,
            accepted: json!({"scheme": "exact"}),
            resource: json!({"url": "http://x/y"}),
            domain_name: "USD Coin".into(),
            domain_version: "2".into(),
            max_timeout_seconds: 60,
        };
        let a = PaymentAuthorization {
            from: "0x1".into(),
            to: "0x2".into(),
            value: "5".into(),
            valid_after: "0".into(),
            valid_before: "99".into(),
            nonce: "0xab".into(),
        };
        let header = payment_header(&request, &a, "0xsig");
        assert_eq!(authorization_in(&header), Some(a));
        let body: Value = serde_json::from_slice(&STANDARD.decode(&header).unwrap()).unwrap();
        assert_eq!(body["x402Version"], 2);
        assert_eq!(body["accepted"]["scheme"], "exact");
        assert_eq!(body["payload"]["signature"], "0xsig");
    }
}
