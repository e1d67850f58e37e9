//! Data parallelism on Burn's collective engine (`burn-collective`, no transport of our own).
//!
//! A run has `world` peers: `local_devices` threads in each of `num_nodes` processes (one process
//! per machine, as `torchrun --nnodes` runs them). Peer `rank = node_rank · local_devices + local`
//! takes rows `[rank · B/world, (rank + 1) · B/world)` of every global batch of `B`; the
//! gradients of the shards are averaged with an all-reduce (mean) before clipping and the
//! optimiser step, so every peer applies the same update and holds the same weights.
//!
//! - Within a process the peers are threads that register with Burn's local collective server.
//! - Across processes Burn's global orchestrator pairs the nodes: node 0 serves it on the
//!   coordinator's port ([`serve_orchestrator`]), every node exposes its tensors on its own data
//!   port and the nodes all-reduce peer to peer. burn-collective 0.21 implements only the
//!   all-reduce across nodes (its global `reduce` and `broadcast` are unimplemented), which is
//!   all that data parallelism needs: every node builds the same initial weights from the run
//!   seed, and a resumed run reads the checkpoint from the run folder on every node (a shared
//!   file system, as the reference's `torchrun` scripts assume).
//! - The gradients are all-reduced as one flat vector in the module's visiting order
//!   ([`all_reduce_grads`]), so peers need the same architecture, not the same parameter ids.
//!
//! Registration waits a bounded time ([`World::timeout`]): a node that cannot reach the
//! coordinator, or a peer that never joins, is an error naming the address, not a hang.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::ops::Range;
use std::time::{Duration, Instant};

use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};
use maetok_nn::io::{ParamVisitor, VisitParams};

/// Errors of a parallel run; messages name the peer, address or value.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    #[error("the global batch of {batch} does not split evenly over {world} peers: give a multiple of {world}")]
    UnevenBatch { batch: usize, world: usize },
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the coordinator {addr} within {secs} s (is node 0 started, and is the port open?): {msg}")]
    CoordinatorUnreachable { addr: String, secs: u64, msg: String },
    #[error("peer {rank} of {world}: the other peers did not join within {secs} s (are all {nodes} node(s) started with the same --num-nodes and --coordinator?)")]
    JoinTimeout { rank: usize, world: usize, nodes: usize, secs: u64 },
    #[error("peer {rank}: collective {op} failed: {err:?}")]
    Collective { rank: usize, op: &'static str, err: CollectiveError },
    #[error("peer {rank}: another peer stopped with an error")]
    PeerFailed { rank: usize },
}

/// This process's place among several machines (`torchrun`'s `--nnodes`, `--node_rank`,
/// `--master_addr:--master_port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub num_nodes: usize,
    pub node_rank: usize,
    /// `HOST:PORT` of the orchestrator, served by node 0.
    pub coordinator: String,
    /// Host or IP address at which the other nodes reach this one (default: the local address
    /// of the route to the coordinator).
    pub host: Option<String>,
    /// Port of this node's tensor data service (default: coordinator port + 1 + node rank).
    pub data_port: Option<u16>,
}

/// The peers of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// Peers (devices) in this process.
    pub local_devices: usize,
    /// `None`: one process.
    pub node: Option<NodeSpec>,
    /// How long registration may wait for the coordinator and the other peers.
    pub timeout: Duration,
}

impl World {
    /// One process with `local_devices` peers.
    pub fn local(local_devices: usize) -> Self {
        Self { local_devices, node: None, timeout: Duration::from_secs(120) }
    }

    pub fn num_nodes(&self) -> usize {
        self.node.as_ref().map_or(1, |n| n.num_nodes)
    }

    /// All peers of the run.
    pub fn size(&self) -> usize {
        self.local_devices * self.num_nodes()
    }

    /// The peer of local device `local`.
    pub fn peer(&self, local: usize) -> Peer {
        let node = self.node.as_ref().map_or(0, |n| n.node_rank);
        Peer { rank: node * self.local_devices + local, world: self.size() }
    }

    /// Whether the run needs the collective at all.
    pub fn is_parallel(&self) -> bool {
        self.size() > 1
    }

    /// Checks the numbers and that `batch` splits evenly.
    pub fn validate(&self, batch: usize) -> Result<(), ParallelError> {
        if self.local_devices == 0 {
            return Err(ParallelError::Config("no devices given".into()));
        }
        if let Some(n) = &self.node {
            if n.num_nodes == 0 || n.node_rank >= n.num_nodes {
                return Err(ParallelError::Config(format!("--node-rank {} is out of range for --num-nodes {}", n.node_rank, n.num_nodes)));
            }
            split_host_port(&n.coordinator)?;
        }
        if !batch.is_multiple_of(self.size()) {
            return Err(ParallelError::UnevenBatch { batch, world: self.size() });
        }
        Ok(())
    }
}

fn split_host_port(addr: &str) -> Result<(String, u16), ParallelError> {
    let bad = || ParallelError::Config(format!("--coordinator '{addr}': give HOST:PORT, e.g. 10.0.0.1:29500"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// One peer of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Global rank, `0..world`.
    pub rank: usize,
    pub world: usize,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}/{}", self.rank, self.world)
    }
}

impl Peer {
    /// The only peer of a single-device run.
    pub const SINGLE: Peer = Peer { rank: 0, world: 1 };

    /// This peer's rows of a global batch of `batch` (which [`World::validate`] checked).
    pub fn shard(&self, batch: usize) -> Range<usize> {
        let per = batch / self.world;
        self.rank * per..(self.rank + 1) * per
    }

    /// Whether this peer writes checkpoints, logs and previews.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    fn id(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    fn err(&self, op: &'static str) -> impl FnOnce(CollectiveError) -> ParallelError + '_ {
        move |err| ParallelError::Collective { rank: self.rank, op, err }
    }
}

/// Waits until `addr` accepts TCP connections, at most `timeout`.
fn wait_reachable(addr: &str, timeout: Duration) -> Result<(), ParallelError> {
    let start = Instant::now();
    let unreachable = |msg: String| ParallelError::CoordinatorUnreachable { addr: addr.to_string(), secs: timeout.as_secs(), msg };
    loop {
        let last = match addr.to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                match addrs.iter().find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).ok()) {
                    Some(_) => return Ok(()),
                    None => "connection refused or timed out".to_string(),
                }
            }
            Err(e) => format!("cannot resolve it: {e}"),
        };
        if start.elapsed() >= timeout {
            return Err(unreachable(last));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The local address of this machine's route to `coordinator` (no packet is sent).
fn route_host(coordinator: &str) -> Option<String> {
    let target = coordinator.to_socket_addrs().ok()?.next()?;
    let sock = UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    sock.connect(target).ok()?;
    Some(sock.local_addr().ok()?.ip().to_string())
}

fn collective_config(world: &World) -> Result<CollectiveConfig, ParallelError> {
    let mut cfg = CollectiveConfig::default().with_num_devices(world.local_devices);
    if let Some(n) = &world.node {
        let (chost, cport) = split_host_port(&n.coordinator)?;
        let data_port = match n.data_port {
            Some(p) => p,
            None => cport
                .checked_add(1 + n.node_rank as u16)
                .ok_or_else(|| ParallelError::Config(format!("no data port above coordinator port {cport}: give --data-port")))?,
        };
        let host = n.host.clone().or_else(|| route_host(&n.coordinator)).unwrap_or(chost.clone());
        let parse = |s: String| s.parse().map_err(|e: String| ParallelError::Config(e));
        cfg = cfg
            .with_num_nodes(n.num_nodes as u32)
            .with_global_address(parse(format!("ws://{chost}:{cport}"))?)
            .with_node_address(parse(format!("ws://{host}:{data_port}"))?)
            .with_data_service_port(data_port);
    }
    Ok(cfg)
}

/// Registers `peer` (on `device`) with the collective; returns once every peer of the run has
/// registered, or fails after `world.timeout`. `B` is the inner (non-autodiff) backend.
pub fn register<B: Backend>(peer: Peer, device: &B::Device, world: &World) -> Result<(), ParallelError> {
    let cfg = collective_config(world)?;
    if let Some(n) = &world.node {
        wait_reachable(&n.coordinator, world.timeout)?;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let device = device.clone();
    // burn-collective waits without a limit (and retries the coordinator forever): wait here
    // with one. On a timeout the registering thread is left behind; the caller stops the run.
    std::thread::spawn(move || {
        let _ = tx.send(collective::register::<B>(peer.id(), device, cfg));
    });
    match rx.recv_timeout(world.timeout) {
        Ok(r) => r.map_err(peer.err("register")),
        Err(_) => {
            Err(ParallelError::JoinTimeout { rank: peer.rank, world: peer.world, nodes: world.num_nodes(), secs: world.timeout.as_secs() })
        }
    }
}

/// Leaves the collective (after the last all-reduce of the run).
pub fn finish<B: Backend>(peer: Peer) -> Result<(), ParallelError> {
    collective::finish_collective::<B>(peer.id()).map_err(peer.err("finish"))
}

/// Collects `module`'s gradients flattened into one vector (`take`), or splits one back
/// (`put`), in visiting order.
struct Bucket<B: AutodiffBackend> {
    grads: GradientsParams,
    flat: Vec<Tensor<B::InnerBackend, 1>>,
    reduced: Option<Tensor<B::InnerBackend, 1>>,
    /// Per visited parameter: whether it had a gradient (frozen ones have none).
    had: Vec<bool>,
    visited: usize,
    offset: usize,
}

impl<B: AutodiffBackend> ParamVisitor<B> for Bucket<B> {
    fn param<const D: usize>(&mut self, _key: &str, param: &mut Param<Tensor<B, D>>) {
        match &self.reduced {
            None => {
                let g = self.grads.remove::<B::InnerBackend, D>(param.id);
                self.had.push(g.is_some());
                if let Some(g) = g {
                    self.flat.push(g.reshape([-1]));
                }
            }
            Some(all) => {
                self.visited += 1;
                if !self.had[self.visited - 1] {
                    return;
                }
                let shape = param.shape();
                let n = shape.num_elements();
                let g = all.clone().slice(self.offset..self.offset + n).reshape(shape);
                self.grads.register::<B::InnerBackend, D>(param.id, g);
                self.offset += n;
            }
        }
    }
    fn param_transposed(&mut self, key: &str, param: &mut Param<Tensor<B, 2>>) {
        self.param(key, param);
    }
    fn buffer(&mut self, _: &str, _: &[usize], _: &[f32]) {}
}

/// Mean of `module`'s gradients over all peers (`B` the autodiff backend; the reduction runs on
/// its inner backend). The gradients travel as one flat vector in the module's visiting order
/// (one all-reduce per step, as DDP's buckets do, instead of one per parameter): every peer must
/// hold a gradient for the same parameters, which a shared architecture and loss ensure.
pub fn all_reduce_grads<B: AutodiffBackend, M: VisitParams<B>>(
    peer: Peer,
    module: &mut M,
    grads: GradientsParams,
) -> Result<GradientsParams, ParallelError> {
    let mut b = Bucket::<B> { grads, flat: Vec::new(), reduced: None, had: Vec::new(), visited: 0, offset: 0 };
    module.visit_params("", &mut b);
    if b.flat.is_empty() {
        return Ok(b.grads);
    }
    let all = Tensor::cat(std::mem::take(&mut b.flat), 0);
    b.reduced = Some(all_reduce(peer, all, true)?);
    module.visit_params("", &mut b);
    Ok(b.grads)
}

/// Element-wise mean (or sum) of `x` over all peers.
pub fn all_reduce<B: Backend, const D: usize>(peer: Peer, x: Tensor<B, D>, mean: bool) -> Result<Tensor<B, D>, ParallelError> {
    let op = if mean { ReduceOperation::Mean } else { ReduceOperation::Sum };
    let r = collective::all_reduce::<B>(peer.id(), x.into_primitive().tensor(), op).map_err(peer.err("all-reduce"))?;
    Ok(Tensor::from_primitive(TensorPrimitive::Float(r)))
}

/// Mean (or sum) of one number over all peers. (It travels as a vector of `world` copies: the
/// ring all-reduce between machines splits its input into one slice per machine.)
pub fn all_reduce_scalar<B: Backend>(peer: Peer, x: f32, mean: bool, device: &B::Device) -> Result<f32, ParallelError> {
    let v = Tensor::<B, 1>::full([peer.world.max(2)], x, device);
    Ok(all_reduce(peer, v, mean)?.slice(0..1).into_scalar().elem())
}

/// Element-wise mean (or sum) of a few numbers over all peers, in one all-reduce (padded with
/// zeros to at least `world` values, for the ring between machines). They travel as f32.
pub fn all_reduce_values<B: Backend>(peer: Peer, xs: &[f64], mean: bool, device: &B::Device) -> Result<Vec<f64>, ParallelError> {
    let mut v: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    v.resize(xs.len().max(peer.world).max(2), 0.0);
    let n = v.len();
    let t = Tensor::<B, 1>::from_data(burn::tensor::TensorData::new(v, [n]), device);
    let r = all_reduce(peer, t, mean)?.into_data().convert::<f32>().to_vec::<f32>().expect("f32 values");
    Ok(r[..xs.len()].iter().map(|&x| x as f64).collect())
}

/// Every peer's rows of a batch-sharded tensor, in rank order: `x` `[b, ...]` holds this peer's
/// `rows` of a global batch of `global` → `[global, ...]` (`B` the autodiff backend). The other
/// peers' rows arrive as constants, through an all-reduce (sum) of zero-padded copies, which adds
/// only zeros and so is exact; this peer's rows stay on the autodiff graph, so the gradient of a
/// loss over the whole batch flows back into them. What needs statistics of the whole batch
/// (the discriminator heads' BatchNorm) runs on the result, identically on every peer.
pub fn gather_rows<B: AutodiffBackend, const D: usize>(
    peer: Peer,
    x: Tensor<B, D>,
    rows: Range<usize>,
    global: usize,
) -> Result<Tensor<B, D>, ParallelError> {
    if peer.world == 1 {
        return Ok(x);
    }
    let dims = x.dims();
    assert_eq!(dims[0], rows.len(), "{peer}: {} rows for the shard {rows:?}", dims[0]);
    let mut full = dims;
    full[0] = global;
    let device = x.device();
    let padded = Tensor::<B::InnerBackend, D>::zeros(full, &device).slice_assign([rows.clone()], x.clone().inner());
    let all = all_reduce(peer, padded, false)?;
    let mut parts = Vec::with_capacity(3);
    if rows.start > 0 {
        parts.push(Tensor::from_inner(all.clone().narrow(0, 0, rows.start)));
    }
    parts.push(x);
    if rows.end < global {
        parts.push(Tensor::from_inner(all.narrow(0, rows.end, global - rows.end)));
    }
    Ok(Tensor::cat(parts, 0))
}

/// Whether every peer reports `ok`: peers call it at the same points so that an error on one
/// (a failed checkpoint write) stops all of them instead of leaving the others waiting in the
/// next all-reduce.
pub fn all_ok<B: Backend>(peer: Peer, ok: bool, device: &B::Device) -> Result<bool, ParallelError> {
    Ok(all_reduce_scalar::<B>(peer, if ok { 0.0 } else { 1.0 }, false, device)? == 0.0)
}

/// Serves Burn's global orchestrator on `port` of every interface, in a background thread, for
/// the rest of the process (node 0 of a multi-machine run calls it before registering). A port
/// already in use is an error naming it.
pub fn serve_orchestrator(port: u16) -> Result<(), ParallelError> {
    drop(
        std::net::TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| ParallelError::Config(format!("cannot serve the coordinator on port {port}: {e}")))?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| ParallelError::Config(format!("cannot start the coordinator's runtime: {e}")))?;
    std::thread::Builder::new()
        .name("collective-coordinator".into())
        .spawn(move || {
            // It returns on Ctrl-C (it installs the handler): end the process as Ctrl-C would.
            rt.block_on(burn_collective::start_global_orchestrator(port));
            std::process::exit(130);
        })
        .map_err(|e| ParallelError::Config(format!("cannot start the coordinator thread: {e}")))?;
    Ok(())
}

/// Runs `body` on every local peer of `world`, one thread each, peer `k` on `devices[k]` with
/// `states[k]`: registers the peer (bounded wait), runs the body, leaves the collective. Returns
/// the bodies' results in local order; the first error (by local order) if any failed. `B` is the
/// inner backend the collective reduces on.
pub fn run_peers<B, S, R, E, F>(world: &World, devices: &[B::Device], states: Vec<S>, body: F) -> Result<Vec<R>, E>
where
    B: Backend,
    S: Send,
    R: Send,
    E: From<ParallelError> + Send,
    F: Fn(Peer, S) -> Result<R, E> + Sync,
{
    assert_eq!((devices.len(), states.len()), (world.local_devices, world.local_devices), "one device and one state per local peer");
    if !world.is_parallel() {
        let s = states.into_iter().next().expect("one state");
        return Ok(vec![body(Peer::SINGLE, s)?]);
    }
    if let Some(n) = world.node.as_ref().filter(|n| n.node_rank == 0) {
        serve_orchestrator(split_host_port(&n.coordinator)?.1)?;
    }
    let results: Vec<Result<R, E>> = std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .zip(devices)
            .enumerate()
            .map(|(k, (s, device))| {
                let body = &body;
                let peer = world.peer(k);
                std::thread::Builder::new()
                    .name(format!("peer-{}", peer.rank))
                    // Burn's autodiff recurses through the graph: unoptimised builds of a
                    // tokenizer step need more than the default 2 MiB (reserved, not committed).
                    .stack_size(256 << 20)
                    .spawn_scoped(scope, move || {
                        register::<B>(peer, device, world)?;
                        let r = body(peer, s);
                        finish::<B>(peer)?;
                        r
                    })
                    .expect("a peer thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    if world.node.is_none() {
        // A later run in this process registers afresh.
        collective::reset_collective::<B>();
    }
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_and_bad_layouts_are_refused() {
        let w = World::local(2);
        assert_eq!(w.size(), 2);
        w.validate(8).unwrap();
        assert_eq!((w.peer(0).shard(8), w.peer(1).shard(8)), (0..4, 4..8));
        let e = w.validate(7).unwrap_err().to_string();
        assert!(e.contains("batch of 7") && e.contains("2 peers"), "{e}");
        let mut n = World::local(2);
        n.node = Some(NodeSpec { num_nodes: 2, node_rank: 1, coordinator: "127.0.0.1:29500".into(), host: None, data_port: None });
        assert_eq!((n.size(), n.peer(1).rank), (4, 3));
        n.validate(8).unwrap();
        n.node.as_mut().unwrap().node_rank = 2;
        assert!(n.validate(8).unwrap_err().to_string().contains("--node-rank 2"));
        n.node.as_mut().unwrap().node_rank = 0;
        n.node.as_mut().unwrap().coordinator = "nohost".into();
        assert!(n.validate(8).unwrap_err().to_string().contains("'nohost'"));
    }

    #[test]
    fn an_unreachable_coordinator_is_a_bounded_wait() {
        // A port nobody listens on: bind one, learn its number, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let start = Instant::now();
        let e = wait_reachable(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(e.contains(&format!("127.0.0.1:{port}")) && e.contains("within 1 s"), "{e}");
    }
}
