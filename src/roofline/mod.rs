//! The roofline: what a machine can do ([`spec`]) and what an attention variant asks of it ([`traffic`]).
//!
//! `T_math = FLOPs / peak`, `T_comms = bytes / bandwidth`; a kernel takes at least the larger of the two.
//! Intensity `I = FLOPs / bytes` decides which: below the ridge point `peak / bandwidth` the kernel is
//! memory-bound, above it compute-bound.

pub mod predict;
pub mod spec;
pub mod traffic;

/// Which ceiling a kernel of a given intensity hits on a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Intensity below the ridge: time is bytes over bandwidth.
    Memory,
    /// Intensity above the ridge: time is FLOPs over peak.
    Compute,
}

impl Bound {
    /// `"memory"` or `"compute"`.
    pub fn name(self) -> &'static str {
        match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
        }
    }
}

// ANCHOR: roofline_time
/// The roofline's lower bound on time, and the ceiling that sets it.
pub fn lower_bound_seconds(flops: f64, bytes: f64, machine: &spec::Ceilings) -> (f64, Bound) {
    let t_math = flops / machine.peak_flops; // T_math = FLOPs / peak
    let t_comms = bytes / machine.bandwidth; // T_comms = bytes / bandwidth
    if t_math >= t_comms {
        (t_math, Bound::Compute)
    } else {
        (t_comms, Bound::Memory)
    }
}
// ANCHOR_END: roofline_time

/// Format a quantity with an SI prefix and three significant digits: `1.07 G`, `524 k`.
pub fn si(x: f64) -> String {
    let prefixes = [
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
        (1.0, ""),
    ];
    for (scale, p) in prefixes {
        if x.abs() >= scale {
            return format!("{} {p}", sig3(x / scale));
        }
    }
    for (scale, p) in [(1e-3, "m"), (1e-6, "µ"), (1e-9, "n")] {
        if x.abs() >= scale {
            return format!("{} {p}", sig3(x / scale));
        }
    }
    format!("{x:.3e} ")
}

/// Three significant digits, no trailing exponent: `1.07`, `52.4`, `524`.
pub fn sig3(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(1.07e9), "1.07 G");
        assert_eq!(si(524e3), "524 k");
        assert_eq!(si(2.5e-6), "2.50 µ");
        assert_eq!(si(64.0), "64.0 ");
    }

    #[test]
    fn bound_switches_at_the_ridge() {
        let m = spec::H100_SXM_DATASHEET;
        let ridge = m.ridge();
        assert_eq!(lower_bound_seconds(ridge * 2.0, 1.0, &m).1, Bound::Compute);
        assert_eq!(lower_bound_seconds(ridge / 2.0, 1.0, &m).1, Bound::Memory);
    }
}
