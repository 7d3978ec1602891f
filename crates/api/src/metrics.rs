//! Prometheus metrics: HTTP traffic counted as it happens, node state read at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub object_bytes_in: Counter,
    pub object_bytes_out: Counter,
    pub items_stored: Gauge,
    pub bytes_stored: Gauge,
    pub disk_free_bytes: Gauge,
    pub disk_full: Gauge,
    pub peers_connected: Gauge,
    pub routing_table_peers: Gauge,
    repair: Family<RepairLabels, Gauge>,
    peer_clock_offset_ms: Family<PeerLabels, Gauge>,
    worker_busy: Family<WorkerLabels, Gauge>,
    worker_errors: Family<WorkerLabels, Gauge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RepairLabels {
    figure: String,
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Metrics::default();
        let registry = &mut metrics.registry;
        let shoal = registry.sub_registry_with_prefix("shoal");
        shoal.register("http_requests", "HTTP requests answered", metrics.requests.clone());
        shoal.register("object_bytes_in", "Object bytes received from clients", metrics.object_bytes_in.clone());
        shoal.register("object_bytes_out", "Object bytes sent to clients", metrics.object_bytes_out.clone());
        shoal.register("items_stored", "Items (chunks and manifests) in the local store", metrics.items_stored.clone());
        shoal.register("bytes_stored", "Bytes in the local store", metrics.bytes_stored.clone());
        shoal.register("disk_free_bytes", "Free bytes on the store's disk", metrics.disk_free_bytes.clone());
        shoal.register("disk_full", "1 while writes are refused for lack of space", metrics.disk_full.clone());
        shoal.register("peers_connected", "Peers with an open connection", metrics.peers_connected.clone());
        shoal.register(
            "routing_table_peers",
            "Peers in the Kademlia routing table",
            metrics.routing_table_peers.clone(),
        );
        shoal.register(
            "repair",
            "Repair, anti-entropy, scrub and collection figures (the `repair` object of status): counts \
             since start, except backlog, under_replicated and peers_counted, which are current",
            metrics.repair.clone(),
        );
        shoal.register(
            "peer_clock_offset_ms",
            "How far each counted peer's clock is from this one's (theirs minus ours), as last measured",
            metrics.peer_clock_offset_ms.clone(),
        );
        shoal.register(
            "worker_busy",
            "1 while a background worker is busy (or throttled), 0 while idle or backing off",
            metrics.worker_busy.clone(),
        );
        shoal.register("worker_errors", "Errors a background worker met since start", metrics.worker_errors.clone());
        metrics
    }

    pub fn set_workers(&self, workers: &[shoal_node::WorkerStatus]) {
        use shoal_node::WorkerState;
        for worker in workers {
            let labels = WorkerLabels { worker: worker.name.clone() };
            let busy = matches!(worker.state, WorkerState::Busy | WorkerState::Throttled);
            self.worker_busy.get_or_create(&labels).set(i64::from(busy));
            self.worker_errors.get_or_create(&labels).set(worker.errors as i64);
        }
    }

    /// The clock of every peer measured now, and of no other.
    pub fn set_peer_clocks(&self, clocks: &[(shoal_core::PeerKey, shoal_node::PeerClock)]) {
        self.peer_clock_offset_ms.clear();
        for (peer, clock) in clocks {
            self.peer_clock_offset_ms.get_or_create(&PeerLabels { peer: peer.to_string() }).set(clock.offset_ms);
        }
    }

    /// One gauge per field of the status, derived from its serialized form so that no
    /// figure can be in `status` and missing here.
    pub fn set_repair(&self, repair: &shoal_node::RepairStatus) {
        let serde_json::Value::Object(figures) = serde_json::to_value(repair).expect("plain numbers") else {
            unreachable!("a struct serializes to an object")
        };
        for (figure, value) in figures {
            let value = value.as_u64().expect("every repair figure is a count");
            self.repair.get_or_create(&RepairLabels { figure }).set(value as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}
