//! MQTT ingest: the hub subscribes to every site's report topic on a broker and stores the
//! batches published there, exactly as it stores those POSTed to it.
//!
//! Owns the hub's MQTT session: MQTT 5 (rumqttc), a persistent session (clean start off, a
//! long session expiry) so the broker keeps what sites publish while the hub is away, QoS 1,
//! and manual acknowledgements: a message is PUBACKed only after its batch is durable in the
//! store, so a hub killed mid-ingest gets it again from the broker. Messages are queued to the
//! store in the order the broker delivers them (the store judges them in that order, which
//! keeps each site's batches in order) and acknowledged in that order as their commits land, so
//! many messages share one commit.
//! MQTT cannot answer 409, so a batch after a gap is stored anyway and the skipped numbers are
//! counted and logged as lost; garbage is logged and acknowledged (the broker would otherwise
//! deliver it forever). It must never publish anything.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use super::config::MqttSettings;
use super::store::{Outcome, StoreError};
use super::Shared;
use crate::wire::report;

/// The session expiry the hub asks for: a week, so a hub that is down for days misses nothing
/// the broker is willing to queue.
pub const SESSION_EXPIRY_SECONDS: u32 = 7 * 24 * 3600;
/// MQTT keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Run the MQTT ingest until `shared.shutdown`.
pub(super) async fn run(settings: MqttSettings, shared: Arc<Shared>) {
    let mut options = MqttOptions::new(
        settings.client_id.clone(),
        settings.host.clone(),
        settings.port,
    );
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECONDS))
        .set_manual_acks(true)
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(u32::try_from(report::MAX_BATCH_BYTES + 64 * 1024).ok());
    let (client, mut events) = AsyncClient::new(options, 64);
    // Messages whose batch is queued in the store, in delivery order, acknowledged by `acker`.
    let (pending, queue) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let acker = tokio::spawn(acknowledge(client.clone(), queue));
    let mut failures: u32 = 0;
    loop {
        let event = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                failures = 0;
                tracing::info!(
                    broker = %format!("{}:{}", settings.host, settings.port),
                    session_present = connack.session_present,
                    "connected to the MQTT broker"
                );
                if let Err(error) = client
                    .subscribe(crate::wire::REPORT_TOPIC_FILTER, QoS::AtLeastOnce)
                    .await
                {
                    tracing::warn!(%error, "cannot subscribe to the report topics");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let stored = submit(&shared, &publish).await;
                if pending.send((publish, stored)).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => {
                failures = failures.saturating_add(1);
                let ceiling = Duration::from_millis(250)
                    .saturating_mul(2u32.saturating_pow(failures.min(8)))
                    .min(MAX_BACKOFF);
                // Full jitter: a broker that comes back is not hit by every hub at once.
                let wait = ceiling.mul_f64(fastrand::f64());
                tracing::warn!(%error, retry_in = ?wait, "MQTT connection failed");
                tokio::select! {
                    () = shared.shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    drop(pending);
    // Acknowledge what is already stored before leaving; what is not stays with the broker.
    let _ = tokio::time::timeout(Duration::from_secs(2), acker).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
}

/// How many delivered messages may wait for their commit.
pub const IN_FLIGHT: usize = 256;

/// What became of a delivered message: skipped (acknowledge at once), or queued in the store.
enum Stored {
    Skip,
    Queued(String, super::store::PendingIngest),
    Refused,
}

/// PUBACK each message, in delivery order, once its batch is durable.
async fn acknowledge(
    client: AsyncClient,
    mut queue: tokio::sync::mpsc::Receiver<(Publish, Stored)>,
) {
    while let Some((publish, stored)) = queue.recv().await {
        let acknowledge = match stored {
            Stored::Skip => true,
            Stored::Refused => false,
            Stored::Queued(key, pending) => match pending.outcome().await {
                Ok(Outcome::Accepted { ack, new }) => {
                    tracing::debug!(key, ack, new, "stored a report batch from MQTT");
                    true
                }
                Ok(Outcome::Duplicate { ack }) => {
                    tracing::debug!(key, ack, "a report batch from MQTT was held already");
                    true
                }
                Ok(Outcome::Gap { ack, expected }) => {
                    // Not reached: MQTT ingest stores over gaps.
                    tracing::warn!(key, ack, expected, "a report batch from MQTT after a gap");
                    true
                }
                Err(error) => {
                    // Not acknowledged: the broker delivers it again after a reconnection.
                    tracing::error!(key, %error, "cannot store a report batch from MQTT");
                    false
                }
            },
        };
        if acknowledge {
            if let Err(error) = client.ack(&publish).await {
                tracing::warn!(%error, "cannot acknowledge an MQTT message");
            }
        }
    }
}

/// The site a report topic names (`edgeroll/{site}/reports`).
pub fn topic_site(topic: &str) -> Option<&str> {
    let site = topic.strip_prefix("edgeroll/")?.strip_suffix("/reports")?;
    (!site.is_empty() && !site.contains('/')).then_some(site)
}

/// Queue one message's batch in the store (or decide to skip it).
async fn submit(shared: &Shared, publish: &Publish) -> Stored {
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    let Some(site) = topic_site(&topic) else {
        tracing::warn!(
            topic,
            "ignoring a message on a topic that is not a site's report topic"
        );
        return Stored::Skip;
    };
    let batch = match report::decode(&publish.payload, true) {
        Ok(batch) => batch,
        Err(error) => {
            tracing::warn!(topic, %error, "dropping a message that is not a valid report batch");
            return Stored::Skip;
        }
    };
    if batch.site != site {
        tracing::warn!(
            topic,
            batch_site = batch.site,
            "dropping a batch published on another site's topic"
        );
        return Stored::Skip;
    }
    let labels = publish.properties.as_ref().and_then(|properties| {
        properties
            .user_properties
            .iter()
            .find(|(key, _)| key == crate::wire::LABELS_HEADER)
            .map(|(_, value)| value.as_str())
    });
    if let Some(labels) = labels {
        shared.presence.labels_reported(site, labels);
    }
    let key = report::idempotency_key(&batch);
    match shared
        .store
        .submit(batch, shared.clock.now(), true, true)
        .await
    {
        Ok(pending) => Stored::Queued(key, pending),
        Err(StoreError::Unavailable) => Stored::Refused,
        Err(error) => {
            tracing::error!(key, %error, "cannot store a report batch from MQTT");
            Stored::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_comes_from_the_topic() {
        assert_eq!(
            topic_site(&crate::wire::report_topic("store-1")),
            Some("store-1")
        );
        assert_eq!(topic_site("edgeroll//reports"), None);
        assert_eq!(topic_site("edgeroll/a/b/reports"), None);
        assert_eq!(topic_site("other/store-1/reports"), None);
    }
}
