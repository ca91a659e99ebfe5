//! Report delivery over MQTT 5: each batch is published with QoS 1 to
//! `edgeroll/{site}/reports` (the gzip-compressed batch as payload), and the broker's PUBACK is
//! the acknowledgement of that batch.
//!
//! The client id is the site's name and the session is kept (clean start off, with a session
//! expiry), as MQTT 5 asks of a client that cares about its messages. The durable outbox, not
//! rumqttc's in-memory queue, is the source of truth: one batch is in flight at a time, and a
//! connection that fails or a PUBACK that does not come in time ends that connection, so a later
//! acknowledgement can never be mistaken for another batch's; the sender reconnects after its
//! jittered backoff and publishes the batch again (the receiver keeps one copy).

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Outcome, SenderError};
use crate::config::ReportsConfig;
use crate::wire::report::{ReportBatch, MAX_BATCH_BYTES};

/// How long the broker keeps the site's session after a disconnect (one week).
const SESSION_EXPIRY_SECONDS: u32 = 7 * 24 * 3600;
/// Keep-alive of the connection.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// What the connection's event loop tells `deliver`.
#[derive(Debug)]
enum Signal {
    /// A PUBLISH left with this packet id.
    Published(u16),
    /// The broker acknowledged this packet id: `Ok`, or why not.
    Acked(u16, Result<(), String>),
    /// The connection failed; it is gone.
    Failed(String),
}

/// One live connection: the client and the signals of its event loop.
struct Connection {
    client: AsyncClient,
    signals: mpsc::UnboundedReceiver<Signal>,
    stop: CancellationToken,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The MQTT transport of one site.
pub(super) struct MqttTransport {
    options: MqttOptions,
    topic: String,
    address: String,
    timeout: Duration,
    /// The site's labels as the `edgeroll-labels` user property carries them (the hub learns a
    /// site's labels from it when the site never polls the hub itself, e.g. behind a CDN).
    labels: String,
    connection: Option<Connection>,
    shutdown: CancellationToken,
}

impl MqttTransport {
    pub(super) fn new(
        host: &str,
        port: u16,
        tls: bool,
        site: &str,
        labels: &std::collections::BTreeMap<String, String>,
        config: &ReportsConfig,
        shutdown: CancellationToken,
    ) -> Result<MqttTransport, SenderError> {
        let mut options = MqttOptions::new(site, host, port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(SESSION_EXPIRY_SECONDS))
            .set_keep_alive(KEEP_ALIVE)
            .set_connection_timeout(config.timeout.as_secs().max(1))
            .set_max_packet_size(Some(MAX_BATCH_BYTES as u32 + 64 * 1024));
        if tls {
            let tls = super::http::tls_config(config)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                std::sync::Arc::new(tls),
            )));
        }
        let scheme = if tls { "mqtts" } else { "mqtt" };
        Ok(MqttTransport {
            options,
            topic: crate::wire::report_topic(site),
            address: format!("{scheme}://{host}:{port}"),
            timeout: config.timeout,
            labels: crate::wire::labels_header_value(labels),
            connection: None,
            shutdown,
        })
    }

    fn connect(&mut self) -> &mut Connection {
        self.connection.get_or_insert_with(|| {
            let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 8);
            let (signals_tx, signals) = mpsc::unbounded_channel();
            let stop = self.shutdown.child_token();
            let poll_stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let event = tokio::select! {
                        () = poll_stop.cancelled() => return,
                        event = eventloop.poll() => event,
                    };
                    let signal = match event {
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Signal::Published(pkid),
                        Ok(Event::Incoming(Packet::PubAck(ack))) => {
                            let result = match ack.reason {
                                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                                    Ok(())
                                }
                                reason => Err(format!("the broker refused the batch: {reason:?}")),
                            };
                            Signal::Acked(ack.pkid, result)
                        }
                        Ok(_) => continue,
                        Err(error) => {
                            // Not reconnecting here: the sender decides when, with jitter.
                            let _ = signals_tx.send(Signal::Failed(error.to_string()));
                            return;
                        }
                    };
                    if signals_tx.send(signal).is_err() {
                        return;
                    }
                }
            });
            Connection {
                client,
                signals,
                stop,
            }
        })
    }

    pub(super) async fn deliver(&mut self, batch: &ReportBatch, body: Bytes) -> Outcome {
        let address = self.address.clone();
        let timeout = self.timeout;
        let topic = self.topic.clone();
        let properties = PublishProperties {
            user_properties: vec![(crate::wire::LABELS_HEADER.to_owned(), self.labels.clone())],
            ..PublishProperties::default()
        };
        let connection = self.connect();
        let exchange = async {
            connection
                .client
                .publish_bytes_with_properties(topic, QoS::AtLeastOnce, false, body, properties)
                .await
                .map_err(|error| format!("cannot publish to {address}: {error}"))?;
            let mut ours = None;
            loop {
                match connection.signals.recv().await {
                    Some(Signal::Published(pkid)) if ours.is_none() => ours = Some(pkid),
                    Some(Signal::Published(_)) => {}
                    Some(Signal::Acked(pkid, result)) if Some(pkid) == ours => {
                        return result.map_err(|reason| format!("{address}: {reason}"));
                    }
                    Some(Signal::Acked(..)) => {}
                    Some(Signal::Failed(reason)) => {
                        return Err(format!("connection to {address} failed: {reason}"))
                    }
                    None => return Err(format!("connection to {address} ended")),
                }
            }
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("{address} did not acknowledge within {timeout:?}")),
        };
        match result {
            Ok(()) => Outcome::Acked(batch.last),
            Err(reason) => {
                // A fresh connection next time: no late acknowledgement of this one can be
                // taken for the next batch's.
                self.connection = None;
                Outcome::Retry {
                    after: None,
                    reason,
                }
            }
        }
    }
}
