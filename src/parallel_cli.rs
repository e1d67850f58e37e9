//! The flags of a run on several devices and machines (`--devices`, `--num-nodes`,
//! `--node-rank`, `--coordinator`: `torchrun`'s `--nproc_per_node`, `--nnodes`, `--node_rank`
//! and `--master_addr:--master_port`), and the devices they name on a backend.

use std::time::Duration;

use anyhow::{bail, Result};
use burn::tensor::backend::{Backend, Device as _, DeviceId};
use clap::Args;
use maetok_train::parallel::{NodeSpec, World};

/// Flags of every command that can spread its work over devices.
#[derive(Debug, Clone, Args)]
pub struct ParallelFlags {
    /// Devices of this machine, one peer each: `cuda:0,cuda:1`, `wgpu:0,wgpu:1`; on the CPU,
    /// `ndarray:0,ndarray:1` runs two peers sharing the cores. Sets the backend. Default: one
    /// device of `--backend`.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Machines taking part (each runs this command with its own --node-rank).
    #[arg(long, default_value_t = 1)]
    pub num_nodes: usize,
    /// This machine's index, 0..num-nodes; node 0 serves the coordinator.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// HOST:PORT of node 0's coordinator (needed with --num-nodes > 1).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Address at which the other machines reach this one (default: this machine's address on
    /// the route to the coordinator).
    #[arg(long)]
    pub node_host: Option<String>,
    /// Port of this machine's tensor exchange (default: coordinator port + 1 + node rank).
    #[arg(long)]
    pub data_port: Option<u16>,
    /// Seconds to wait for the coordinator and the other peers before giving up.
    #[arg(long, default_value_t = 120)]
    pub join_timeout: u64,
}

/// What the flags say: the backend, this machine's device indices, and the run's peers.
#[derive(Debug, Clone)]
pub struct Layout {
    pub backend: String,
    pub indices: Vec<u16>,
    pub world: World,
}

impl ParallelFlags {
    /// The layout, with `backend` (the `--backend` flag, if given) checked against `--devices`.
    pub fn layout(&self, backend: Option<&str>) -> Result<Layout> {
        let (name, indices) = if self.devices.is_empty() {
            (backend.unwrap_or("ndarray").to_string(), vec![0])
        } else {
            let mut name: Option<&str> = None;
            let mut indices = Vec::new();
            for d in &self.devices {
                let Some((b, i)) = d.trim().split_once(':') else { bail!("--devices '{d}': give BACKEND:INDEX, e.g. cuda:0") };
                let Ok(i) = i.parse::<u16>() else { bail!("--devices '{d}': '{i}' is not a device index") };
                if name.is_some_and(|n| n != b) {
                    bail!("--devices mixes backends ({} and {b}): a run uses one backend", name.unwrap_or_default());
                }
                if indices.contains(&i) {
                    bail!("--devices names {d} twice");
                }
                name = Some(b);
                indices.push(i);
            }
            let name = name.expect("at least one device").to_string();
            if let Some(b) = backend.filter(|b| *b != name) {
                bail!("--devices names {name} devices but --backend is {b}: give one of them");
            }
            (name, indices)
        };
        crate::backend::check_available(&name)?;
        let node = match (self.num_nodes, &self.coordinator) {
            (0, _) => bail!("--num-nodes 0: give at least 1"),
            (1, _) if self.node_rank == 0 => None,
            (1, _) => bail!("--node-rank {} needs --num-nodes > {}", self.node_rank, self.node_rank),
            (_, None) => bail!("--num-nodes {} needs --coordinator HOST:PORT (node 0's address)", self.num_nodes),
            (n, Some(c)) => Some(NodeSpec {
                num_nodes: n,
                node_rank: self.node_rank,
                coordinator: c.clone(),
                host: self.node_host.clone(),
                data_port: self.data_port,
            }),
        };
        let world = World { local_devices: indices.len(), node, timeout: Duration::from_secs(self.join_timeout.max(1)) };
        // The node numbers and the coordinator's form (the batch is checked by the run).
        world.validate(world.size())?;
        Ok(Layout { backend: name, indices, world })
    }
}

/// A trainer's checks before it builds anything: the global `batch` splits evenly over `world`,
/// one device per local peer (`devices` of them); then logs the layout of a parallel run.
pub fn check_training_layout(world: &World, devices: usize, batch: usize) -> Result<()> {
    world.validate(batch)?;
    if devices != world.local_devices {
        bail!("{devices} devices given for {} peers on this machine: give one device per local peer", world.local_devices);
    }
    if world.is_parallel() {
        tracing::info!("{} peers: {devices} on this machine, global batch {batch} ({} per peer)", world.size(), batch / world.size());
    }
    Ok(())
}

/// The backend and device indices of a one-machine command (`--backend`, `--devices`).
pub fn local_devices(devices: &[String], backend: Option<&str>) -> Result<(String, Vec<u16>)> {
    let f = ParallelFlags {
        devices: devices.to_vec(),
        num_nodes: 1,
        node_rank: 0,
        coordinator: None,
        node_host: None,
        data_port: None,
        join_timeout: 1,
    };
    let l = f.layout(backend)?;
    Ok((l.backend, l.indices))
}

/// The devices of `indices` on backend `B` (called `name`): on the CPU backends every index is
/// the one CPU (the peers share its cores); on a GPU backend each must exist.
pub fn devices<B: Backend>(name: &str, indices: &[u16]) -> Result<Vec<B::Device>> {
    if matches!(name, "ndarray" | "flex") {
        return Ok(vec![B::Device::default(); indices.len()]);
    }
    let count = B::device_count(0);
    indices
        .iter()
        .map(|&i| {
            if usize::from(i) >= count {
                bail!("device {name}:{i} does not exist: this machine has {count} {name} device(s) (0..{count})");
            }
            Ok(B::Device::from_id(DeviceId::new(0, i)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(devices: &[&str]) -> ParallelFlags {
        ParallelFlags {
            devices: devices.iter().map(|s| s.to_string()).collect(),
            num_nodes: 1,
            node_rank: 0,
            coordinator: None,
            node_host: None,
            data_port: None,
            join_timeout: 5,
        }
    }

    fn err(f: &ParallelFlags, backend: Option<&str>) -> String {
        f.layout(backend).unwrap_err().to_string()
    }

    #[test]
    fn device_lists_are_checked_and_named_in_errors() {
        let l = flags(&["ndarray:0", "ndarray:1"]).layout(None).unwrap();
        assert_eq!((l.backend.as_str(), l.indices.as_slice(), l.world.size()), ("ndarray", &[0u16, 1][..], 2));
        assert_eq!(flags(&[]).layout(None).unwrap().world.size(), 1);
        assert!(err(&flags(&["ndarray:0", "wgpu:1"]), None).contains("mixes backends"));
        assert!(err(&flags(&["ndarray:0", "ndarray:0"]), None).contains("ndarray:0 twice"));
        assert!(err(&flags(&["ndarray"]), None).contains("BACKEND:INDEX"));
        assert!(err(&flags(&["ndarray:x"]), None).contains("'x' is not a device index"));
        assert!(err(&flags(&["ndarray:0"]), Some("flex")).contains("--backend is flex"));
        assert!(err(&flags(&["tpu:0"]), None).contains("unknown backend 'tpu'"));
        if !cfg!(feature = "cuda") {
            assert!(err(&flags(&["cuda:0", "cuda:1"]), None).contains("not compiled into this binary"));
        }
        let mut f = flags(&["ndarray:0"]);
        f.num_nodes = 2;
        assert!(err(&f, None).contains("needs --coordinator"));
        f.coordinator = Some("127.0.0.1:29500".into());
        assert_eq!(f.layout(None).unwrap().world.size(), 2);
        f.coordinator = Some("localhost".into());
        assert!(err(&f, None).contains("HOST:PORT"));
        f.num_nodes = 1;
        f.node_rank = 1;
        assert!(err(&f, None).contains("--node-rank 1"));
    }
}
