//! β schedules and the reference's respacing (`space_timesteps`).

use crate::SamplerError;

/// β schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `linspace(1e-4·k, 0.02·k, T)`, `k = 1000/T`.
    Linear,
    /// IDDPM cosine, clipped at 0.999.
    Cosine,
}

/// The β's of `schedule` over `t` steps, f64.
pub fn betas(schedule: Schedule, t: usize) -> Vec<f64> {
    match schedule {
        Schedule::Linear => {
            let k = 1000.0 / t as f64;
            let (a, b) = (1e-4 * k, 0.02 * k);
            // np.linspace: i·step + start, the last entry exactly `stop`.
            let step = (b - a) / (t - 1) as f64;
            (0..t).map(|i| if i == t - 1 { b } else { i as f64 * step + a }).collect()
        }
        Schedule::Cosine => {
            let f = |s: f64| ((s + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
            (0..t).map(|i| (1.0 - f((i + 1) as f64 / t as f64) / f(i as f64 / t as f64)).min(0.999)).collect()
        }
    }
}

/// The kept steps of a respacing spec (`"250"`, `"10,15,20"` per section, `"ddim25"`), as the
/// reference's `space_timesteps`: fractional strides accumulated by repeated addition and
/// rounded half-to-even. Empty spec: all steps.
pub fn space_timesteps(t: usize, spec: &str) -> Result<Vec<usize>, SamplerError> {
    let spec = spec.trim();
    let bad = |reason: String| SamplerError::Respacing { spec: spec.to_string(), reason };
    if spec.is_empty() {
        return Ok((0..t).collect());
    }
    if let Some(n) = spec.strip_prefix("ddim") {
        let n: usize = n.parse().map_err(|_| bad("expected ddimN with an integer N".into()))?;
        for i in 1..t {
            if (0..t).step_by(i).count() == n {
                return Ok((0..t).step_by(i).collect());
            }
        }
        return Err(bad(format!("cannot create exactly {n} steps with an integer stride over {t}")));
    }
    let counts: Vec<usize> = spec
        .split(',')
        .map(|c| c.trim().parse::<usize>().map_err(|_| bad(format!("'{c}' is not a step count"))))
        .collect::<Result<_, _>>()?;
    let (per, extra) = (t / counts.len(), t % counts.len());
    let mut start = 0;
    let mut all = Vec::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = per + usize::from(i < extra);
        if size < count {
            return Err(bad(format!("cannot divide a section of {size} steps into {count}")));
        }
        let stride = if count <= 1 { 1.0 } else { (size - 1) as f64 / (count - 1) as f64 };
        let mut cur = 0.0f64;
        for _ in 0..count {
            all.push(start + cur.round_ties_even() as usize);
            cur += stride;
        }
        start += size;
    }
    all.sort();
    all.dedup();
    Ok(all)
}
