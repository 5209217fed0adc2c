//! `GET /cluster`: who shares the stream, read from Redis's own books
//! (XINFO), so it needs no writes of its own.
//!
//! - gateways: each consumer of the group with the chunks it holds (its
//!   pending entries) and how long ago Redis last heard from it (every live
//!   gateway reads at least once a second, so `idle_ms` is its heartbeat);
//!   `live` while that is under `queue.claim_idle_ms`, after which its
//!   chunks are taken over by the others;
//! - stream: entries (chunks not yet acked: waiting or in flight), chunks
//!   delivered to consumers and not acked (`pending`), and `lag`, the entries
//!   no consumer has read yet (Redis 7; `null` when Redis cannot tell).

use redis::Value;
use serde::Serialize;

use super::{CHUNK_TOKENS, RedisError, RedisStore};

/// One gateway of the cluster, as Redis sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GatewayView {
    /// `queue.consumer` of that gateway.
    pub consumer: String,
    /// Chunks it holds (read, not yet acked).
    pub chunks_held: u64,
    /// Milliseconds since it last talked to Redis.
    pub idle_ms: u64,
    /// When that was (ms since the epoch, by Redis's clock).
    pub last_heartbeat_ms: u64,
    /// Heard from within `queue.claim_idle_ms`.
    pub live: bool,
}

/// The answer of `GET /cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The stream key (`{<queue.stream>}`).
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// This gateway's consumer name.
    pub this_gateway: String,
    /// Chunks this gateway may hold now (its window, sized from measured
    /// round trips); a `kill -9` of it resends at most this many chunks.
    pub this_gateway_window: usize,
    /// Every consumer the group knows, live or not, by name.
    pub gateways: Vec<GatewayView>,
    /// Entries in the stream: chunks not finished yet.
    pub stream_length: u64,
    /// Upper bound on the tokens they hold (`stream_length` × chunk size).
    pub stream_tokens_max: u64,
    /// Chunks read by a gateway and not yet acked.
    pub pending: u64,
    /// Chunks no gateway has read yet; `None` when Redis does not say.
    pub lag: Option<u64>,
}

/// Field `name` of a flat XINFO reply (`[k1, v1, k2, v2, ...]` or a RESP3 map).
fn field<'a>(reply: &'a Value, name: &str) -> Option<&'a Value> {
    match reply {
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| {
                matches!(&kv[0], Value::BulkString(k) if k == name.as_bytes())
                    || matches!(&kv[0], Value::SimpleString(k) if k == name)
            })
            .and_then(|kv| kv.get(1)),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| redis::from_redis_value::<String>(k).ok().as_deref() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn number(reply: &Value, name: &str) -> Option<u64> {
    field(reply, name).and_then(|v| redis::from_redis_value::<u64>(v).ok())
}

fn text(reply: &Value, name: &str) -> Option<String> {
    field(reply, name).and_then(|v| redis::from_redis_value::<String>(v).ok())
}

/// Reads the view from Redis.
pub async fn read(cluster: &RedisStore) -> Result<ClusterView, RedisError> {
    let config = cluster.redis_config();
    let mut conn = cluster.connection()?;
    let (consumers, groups, length, time): (Vec<Value>, Vec<Value>, u64, (String, String)) =
        redis::pipe()
            .cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&config.stream)
            .arg(&config.group)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(&config.stream)
            .cmd("XLEN")
            .arg(&config.stream)
            .cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(|e| cluster.failed("XINFO", e))?;
    let now_ms =
        time.0.parse::<u64>().unwrap_or(0) * 1000 + time.1.parse::<u64>().unwrap_or(0) / 1000;
    let claim_idle = u64::try_from(config.claim_idle.as_millis()).unwrap_or(u64::MAX);
    let mut gateways: Vec<GatewayView> = consumers
        .iter()
        .filter_map(|c| {
            let idle_ms = number(c, "idle")?;
            Some(GatewayView {
                consumer: text(c, "name")?,
                chunks_held: number(c, "pending").unwrap_or(0),
                idle_ms,
                last_heartbeat_ms: now_ms.saturating_sub(idle_ms),
                live: idle_ms < claim_idle,
            })
        })
        .collect();
    gateways.sort_by(|a, b| a.consumer.cmp(&b.consumer));
    let group = groups
        .iter()
        .find(|g| text(g, "name").as_deref() == Some(config.group.as_str()));
    Ok(ClusterView {
        stream: config.stream.clone(),
        group: config.group.clone(),
        this_gateway: config.consumer.clone(),
        this_gateway_window: cluster.window(),
        gateways,
        stream_length: length,
        stream_tokens_max: length * CHUNK_TOKENS as u64,
        pending: group.and_then(|g| number(g, "pending")).unwrap_or(0),
        lag: group.and_then(|g| number(g, "lag")),
    })
}
