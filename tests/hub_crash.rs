//! `kill -9` of the real `edgeroll hub` binary while sites post report batches: nothing it
//! acknowledged is lost, nothing is stored twice, and no site's sequence has a gap.
// Real processes in real time.
#![allow(clippy::disallowed_methods)]

mod hub_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hub_support::*;

/// How many times the hub is killed.
const KILLS: usize = 15;
/// Sites posting at once.
const SITES: usize = 4;

fn start_hub(dir: &HubDir, address: SocketAddr) -> Child {
    dir.spawn(address)
}

/// What one site knows: the next sequence number to send and the highest acknowledged.
#[derive(Debug, Default, Clone, Copy)]
struct SiteState {
    next: u64,
    acked: u64,
    accepted_batches: u64,
}

/// Post batches for `site` until `stop`: each covers `next..` with a random length; an
/// unanswered batch is sent again (as an outbox does); 409 resends from the ack.
fn sender(address: SocketAddr, site: String, state: Arc<Mutex<SiteState>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let next = state.lock().expect("state").next;
        let last = next + fastrand::u64(0..12);
        let sent = batch(&site, next, last, next..=last);
        match try_post_batch(address, &sent) {
            Ok(answer) if answer.status == 200 || answer.status == 409 => {
                let ack = answer.json()["ack"].as_u64().expect("ack");
                let mut state = state.lock().expect("state");
                assert!(
                    ack >= state.acked,
                    "the ack went back from {} to {ack}",
                    state.acked
                );
                state.acked = ack;
                state.next = ack + 1;
                if answer.status == 200 {
                    state.accepted_batches += 1;
                }
            }
            Ok(answer) if answer.status == 503 => std::thread::sleep(Duration::from_millis(20)),
            Ok(answer) => panic!("unexpected answer {}: {}", answer.status, answer.text()),
            // The hub is down (killed): try again shortly, with the same range.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn kill_9_during_ingest_loses_nothing_acknowledged_and_duplicates_nothing() {
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let dir = HubDir::new(&address.to_string(), "");
    let states: BTreeMap<String, Arc<Mutex<SiteState>>> = (0..SITES)
        .map(|index| {
            (
                format!("store-{index}"),
                Arc::new(Mutex::new(SiteState {
                    next: 1,
                    ..SiteState::default()
                })),
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = states
        .iter()
        .map(|(site, state)| {
            let (site, state, stop) = (site.clone(), Arc::clone(state), Arc::clone(&stop));
            std::thread::spawn(move || sender(address, site, state, stop))
        })
        .collect();

    for _ in 0..KILLS {
        let mut hub = start_hub(&dir, address);
        std::thread::sleep(Duration::from_millis(100 + fastrand::u64(0..400)));
        hub.kill().expect("kill -9 the hub");
        hub.wait().expect("reap the hub");
    }
    let hub = start_hub(&dir, address);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().expect("sender");
    }

    let mut total = 0;
    for (site, state) in &states {
        let state = *state.lock().expect("state");
        let (seqs, high_water) = held(address, site);
        assert!(
            high_water >= state.acked,
            "{site}: acknowledged {} but the hub holds up to {high_water}",
            state.acked
        );
        assert_eq!(
            seqs,
            (1..=high_water).collect::<Vec<_>>(),
            "{site}: every number up to the high-water mark exactly once"
        );
        assert!(state.accepted_batches > 0, "{site} got nothing accepted");
        total += seqs.len();
    }
    eprintln!("{KILLS} kills, {total} reports held, none lost or duplicated");
    let mut hub = hub;
    let _ = hub.kill();
    let _ = hub.wait();
}
