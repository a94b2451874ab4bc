//! How much of the KV memory holds tokens: a seeded request trace served from a contiguous reservation
//! and from the block manager, step by step.
//!
//! The trace: `requests` requests, all waiting at time 0 (an offline throughput run). Prompt and output
//! lengths are log-normal, `exp(ln(median) + sigma Z)` with `Z` standard normal, the heavy right tail of
//! chat traces such as ShareGPT (the parameters are this book's choice, not fitted to ShareGPT), cut so
//! that `1 <= prompt`, `1 <= output` and `prompt + output <= max_len`.
//!
//! The server: a pool of `capacity` token slots. Each step it admits waiting requests first come first
//! served while they fit, then every running sequence gains one token, then finished ones leave.
//! * `Contiguous { reserve: Max }` reserves `max_len` slots per request at admission (Orca (Max) in Kwon
//!   et al., Fig. 2); `Oracle` reserves exactly `prompt + output` (Orca (Oracle): it knows the future). Both
//!   count slots only, ignoring external fragmentation, so they are upper bounds for a contiguous cache.
//! * `Paged { block_size }` asks [`BlockManager::can_allocate`] (with its 1% watermark) to admit a prompt and
//!   [`BlockManager::append_slot`] for every token; when a block is missing, the most recently admitted
//!   sequence is preempted by recomputation (freed and put back at the head of the queue, with the tokens it
//!   generated appended to its prompt), as vLLM's scheduler does.
//!
//! Measured per step, after the step's tokens: tokens stored (the running sequences' lengths) over slots
//! held (reservations, or blocks in use times `B`), summed over all steps.

use super::block_manager::{
    AllocStatus, BlockError, BlockId, BlockManager, Device, ManagerConfig, Placement, SeqId,
};
use crate::minimodel::rng::Rng;
use std::collections::VecDeque;
use thiserror::Error;

/// Why a trace was refused before any step ran: each case would leave a request waiting forever or a
/// sequence past its reservation, so the replay would never end or would measure nothing true.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// The block manager refused the pool (a block size of zero, say).
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A request with no prompt or no output.
    #[error(
        "request {index}: prompt {prompt} and output {output} tokens; both must be at least 1"
    )]
    Empty {
        /// Its place in the trace.
        index: usize,
        /// Prompt tokens.
        prompt: usize,
        /// Tokens to generate.
        output: usize,
    },
    /// A request that even an empty pool could never hold to its end.
    #[error("request {index} needs {need} token slots at its longest; the layout can give one at most {most}")]
    NeverFits {
        /// Its place in the trace.
        index: usize,
        /// Slots it needs (its reservation, or its blocks' slots, at its last token).
        need: usize,
        /// The most one sequence can hold (the pool, less the watermark's reserve where paged).
        most: usize,
    },
}

/// The trace's distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceConfig {
    /// Seed of the generator.
    pub seed: u64,
    /// Number of requests.
    pub requests: usize,
    /// Longest sequence the model serves (prompt plus output).
    pub max_len: usize,
    /// Median prompt length.
    pub prompt_median: f64,
    /// Log-space standard deviation of prompt lengths.
    pub prompt_sigma: f64,
    /// Median output length.
    pub output_median: f64,
    /// Log-space standard deviation of output lengths.
    pub output_sigma: f64,
}

impl TraceConfig {
    /// The book's trace: 1000 requests, max length 2048, prompts of median 160 and outputs of median 240
    /// tokens, both with log-space sigma 1.
    pub const BOOK: TraceConfig = TraceConfig {
        seed: 2023,
        requests: 1000,
        max_len: 2048,
        prompt_median: 160.0,
        prompt_sigma: 1.0,
        output_median: 240.0,
        output_sigma: 1.0,
    };
}

/// One request: its prompt and how many tokens it will generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Prompt tokens.
    pub prompt: usize,
    /// Tokens to generate.
    pub output: usize,
}

/// The seeded trace.
pub fn trace(cfg: &TraceConfig) -> Vec<Request> {
    let mut r = Rng::new(cfg.seed);
    let max = cfg.max_len.max(2);
    (0..cfg.requests)
        .map(|_| {
            let p = (cfg.prompt_median.ln() + cfg.prompt_sigma * r.normal()).exp();
            let o = (cfg.output_median.ln() + cfg.output_sigma * r.normal()).exp();
            let prompt = (p.round() as usize).clamp(1, max - 1);
            let output = (o.round() as usize).clamp(1, max - prompt);
            Request { prompt, output }
        })
        .collect()
}

/// How contiguous reservations are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// `max_len` slots per request.
    Max,
    /// Exactly `prompt + output` slots.
    Oracle,
}

/// A KV cache layout to serve the trace from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One contiguous reservation per sequence.
    Contiguous {
        /// How big.
        reserve: Reserve,
    },
    /// vLLM's blocks.
    Paged {
        /// Tokens per block.
        block_size: usize,
    },
}

/// What serving the trace looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayStats {
    /// Steps until every request finished.
    pub steps: usize,
    /// Sum over steps of tokens stored.
    pub token_steps: f64,
    /// Sum over steps of slots held (reserved, or in allocated blocks).
    pub held_steps: f64,
    /// Sum over steps of running sequences.
    pub seq_steps: f64,
    /// Most sequences running at once.
    pub peak_running: usize,
    /// Sequences preempted (paged only).
    pub preemptions: usize,
    /// Tokens generated (equal to the trace's outputs: a check that every request finished).
    pub generated: usize,
}

impl ReplayStats {
    /// Fraction of held KV slots that store a token, averaged over steps (weighted by slots).
    pub fn used_fraction(&self) -> f64 {
        self.token_steps / self.held_steps
    }

    /// Mean running sequences per step.
    pub fn mean_running(&self) -> f64 {
        self.seq_steps / self.steps as f64
    }
}

/// A running sequence.
struct Running {
    id: SeqId,
    /// Tokens stored.
    len: usize,
    /// Tokens still to generate.
    left: usize,
    /// Slots reserved (contiguous only).
    reserved: usize,
}

/// Serve the trace from `capacity` token slots. Every request is checked first (at least one prompt and one
/// output token; at most `max_len` tokens where each reservation is `max_len`; and no more, at its last
/// token, than an empty pool can hold): a trace that could never finish is refused before any step.
pub fn replay(
    reqs: &[Request],
    layout: Layout,
    capacity: usize,
    max_len: usize,
) -> Result<ReplayStats, ReplayError> {
    let mut mgr = match layout {
        Layout::Paged { block_size } => Some(BlockManager::new(ManagerConfig::new(
            block_size,
            capacity / block_size.max(1),
            0,
        ))?),
        Layout::Contiguous { .. } => None,
    };
    for (index, r) in reqs.iter().enumerate() {
        if r.prompt == 0 || r.output == 0 {
            let (prompt, output) = (r.prompt, r.output);
            return Err(ReplayError::Empty {
                index,
                prompt,
                output,
            });
        }
        let total = r.prompt.saturating_add(r.output);
        let (need, most) = match (layout, &mgr) {
            (
                Layout::Contiguous {
                    reserve: Reserve::Max,
                },
                _,
            ) if total > max_len => (total, max_len),
            (
                Layout::Contiguous {
                    reserve: Reserve::Max,
                },
                _,
            ) => (max_len, capacity),
            (
                Layout::Contiguous {
                    reserve: Reserve::Oracle,
                },
                _,
            ) => (total, capacity),
            (Layout::Paged { block_size }, Some(m)) => {
                // A preempted sequence comes back with everything it generated as its prompt.
                let blocks = m.pool(Device::Gpu).num_blocks();
                let most = (blocks - m.watermark_blocks()) * block_size;
                (total.div_ceil(block_size) * block_size, most)
            }
            (Layout::Paged { .. }, None) => unreachable!("paged layouts have a manager"),
        };
        if need > most {
            return Err(ReplayError::NeverFits { index, need, most });
        }
    }
    let mut waiting: VecDeque<(SeqId, Request)> = reqs
        .iter()
        .enumerate()
        .map(|(i, &r)| (i as SeqId, r))
        .collect();
    let mut running: Vec<Running> = Vec::new();
    let mut reserved_total = 0usize;
    let mut st = ReplayStats {
        steps: 0,
        token_steps: 0.0,
        held_steps: 0.0,
        seq_steps: 0.0,
        peak_running: 0,
        preemptions: 0,
        generated: 0,
    };
    while !waiting.is_empty() || !running.is_empty() {
        // Admit, first come first served: stop at the first request that does not fit.
        while let Some(&(id, r)) = waiting.front() {
            let fits = match (layout, mgr.as_mut()) {
                (Layout::Contiguous { reserve }, _) => {
                    let need = match reserve {
                        Reserve::Max => max_len,
                        Reserve::Oracle => r.prompt + r.output,
                    };
                    (reserved_total + need <= capacity).then(|| {
                        reserved_total += need;
                        need
                    })
                }
                (Layout::Paged { .. }, Some(m)) => match m.can_allocate(r.prompt) {
                    AllocStatus::Ok => {
                        let prompt = vec![0; r.prompt]; // token values do not matter without caching
                        let _ = m.allocate(&[id], &prompt).expect("admission said Ok");
                        Some(0)
                    }
                    AllocStatus::Later => None,
                    AllocStatus::Never => unreachable!("request {id}: every request was checked"),
                },
                (Layout::Paged { .. }, None) => unreachable!("paged layouts have a manager"),
            };
            let Some(reserved) = fits else { break };
            waiting.pop_front();
            running.push(Running {
                id,
                len: r.prompt,
                left: r.output,
                reserved,
            });
        }
        // Decode: one token per running sequence.
        let mut i = 0;
        while i < running.len() {
            if let Some(m) = mgr.as_mut() {
                let id = running[i].id;
                if !m.can_append_slot(id).expect("a live sequence") {
                    // Preempt the most recently admitted sequence (possibly this one) by recomputation.
                    let victim = running.pop().expect("this sequence is running");
                    m.free(victim.id);
                    st.preemptions += 1;
                    waiting.push_front((
                        victim.id,
                        Request {
                            prompt: victim.len,
                            output: victim.left,
                        },
                    ));
                    continue; // retry sequence i (unless it was the victim)
                }
                let _ = m.append_slot(id, 0).expect("checked");
            }
            running[i].len += 1;
            running[i].left -= 1;
            st.generated += 1;
            i += 1;
        }
        // Measure after the step's tokens are stored.
        st.steps += 1;
        st.token_steps += running.iter().map(|s| s.len).sum::<usize>() as f64;
        st.held_steps += match (&mgr, layout) {
            (Some(m), Layout::Paged { block_size }) => {
                let held = m.pool(Device::Gpu).num_blocks() - m.num_free_blocks(Device::Gpu);
                (held * block_size) as f64
            }
            _ => reserved_total as f64,
        };
        st.seq_steps += running.len() as f64;
        st.peak_running = st.peak_running.max(running.len());
        // Finished sequences leave.
        running.retain(|s| {
            if s.left > 0 {
                return true;
            }
            match mgr.as_mut() {
                Some(m) => {
                    m.free(s.id);
                }
                None => reserved_total -= s.reserved,
            }
            false
        });
    }
    Ok(st)
}

// ANCHOR: served_tables
/// How [`served_tables`] serves: `seqs` sequences to measure, each `prompt` tokens at admission then
/// decoded to `len`, on a pool of `pool_blocks` blocks of `block_size` that other requests share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServedConfig {
    /// Seed of the other requests' lengths.
    pub seed: u64,
    /// Sequences whose tables are returned.
    pub seqs: usize,
    /// Their prompt tokens (allocated at admission).
    pub prompt: usize,
    /// Their length when the tables are taken (`len - prompt` tokens decoded, one a step).
    pub len: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the pool: the measured sequences' and the other requests'.
    pub pool_blocks: usize,
    /// Before the measured sequences arrive, the other requests free this many pools' worth of blocks
    /// (the free list's churn).
    pub turnovers: usize,
    /// Which free block each new block is (vLLM's free list, or after the sequence's last).
    pub placement: Placement,
}

impl ServedConfig {
    /// The book's scenario for `seqs` sequences of `len` tokens: half prompt, half decoded, on a pool of
    /// twice their blocks, after two turnovers of the pool.
    pub fn book(seqs: usize, len: usize, block_size: usize) -> ServedConfig {
        ServedConfig {
            seed: 2023,
            seqs,
            prompt: (len / 2).max(1),
            len,
            block_size,
            pool_blocks: 2 * seqs * len.div_ceil(block_size.max(1)),
            turnovers: 2,
            placement: Placement::FreeList,
        }
    }
}

/// The block tables of `cfg.seqs` sequences as a busy server leaves them. The block manager (vLLM's
/// defaults, its free list last-in first-out, with `cfg.placement`) serves other requests first, lengths log-normal as in
/// [`trace`] with prompt and output medians of `len / 8` tokens and log-space sigma 1, each at most `len`
/// tokens, until they have freed `turnovers` pools' worth of blocks. Then the measured sequences arrive
/// at the head of the queue: each is admitted with its prompt as soon as the pool has room for the whole
/// of it (the prompt's blocks and those its decode will take), and every step each running sequence
/// (in order of admission) gains one token, the measured ones until they are `len` long, while other
/// requests keep arriving whenever their whole length fits beside everyone's remaining needs and
/// leaving when done. Nobody is ever preempted (admission reserves each request's whole length), so the
/// tables are those of an uninterrupted run.
pub fn served_tables(cfg: &ServedConfig) -> Result<Vec<Vec<BlockId>>, ReplayError> {
    let bs = cfg.block_size;
    let mut mgr = BlockManager::new(ManagerConfig {
        placement: cfg.placement,
        ..ManagerConfig::new(bs, cfg.pool_blocks, 0)
    })?;
    let blocks = |tokens: usize| tokens.div_ceil(bs.max(1));
    if cfg.seqs == 0 {
        return Ok(Vec::new());
    }
    // Room for the measured sequences' whole lengths (so an empty pool also admits any other request,
    // which is at most `len` tokens long).
    let need = blocks(cfg.len) * cfg.seqs + mgr.watermark_blocks();
    if cfg.prompt == 0 || cfg.prompt > cfg.len || need > cfg.pool_blocks {
        return Err(ReplayError::NeverFits {
            index: 0,
            need: need * bs,
            most: cfg.pool_blocks * bs,
        });
    }
    // The other requests: an endless seeded stream of (prompt, output).
    let median = (cfg.len as f64 / 8.0).max(1.0);
    let mut rng = Rng::new(cfg.seed);
    let mut other = move || {
        let mut draw = || (median.ln() + rng.normal()).exp().round() as usize;
        let prompt = draw().clamp(1, cfg.len.max(2) - 1);
        let output = draw().clamp(1, cfg.len.max(2) - prompt);
        Request { prompt, output }
    };
    // Running sequences: (id, tokens still to generate).
    let mut running: Vec<(SeqId, usize)> = Vec::new();
    let mut next_id: SeqId = cfg.seqs as SeqId; // 0 .. seqs are the measured ones
    let mut pending = other();
    let mut freed = 0usize;
    let mut measured_in = 0usize;
    // Blocks the running sequences will still take (their reservations not yet allocated).
    let still_needs = |mgr: &BlockManager, running: &[(SeqId, usize)]| -> usize {
        running
            .iter()
            .map(|&(id, left)| {
                let now = mgr.num_tokens(id).expect("running");
                blocks(now + left) - blocks(now)
            })
            .sum()
    };
    let room = |mgr: &BlockManager, running: &[(SeqId, usize)]| -> usize {
        mgr.num_free_blocks(Device::Gpu)
            .saturating_sub(still_needs(mgr, running) + mgr.watermark_blocks())
    };
    loop {
        let churned = freed >= cfg.turnovers * cfg.pool_blocks;
        // Admit: the measured sequences first once the pool has churned, then other requests.
        while churned && measured_in < cfg.seqs {
            if room(&mgr, &running) < blocks(cfg.len) {
                break;
            }
            let id = measured_in as SeqId;
            let _ = mgr.allocate(&[id], &vec![0; cfg.prompt])?;
            running.push((id, cfg.len - cfg.prompt));
            measured_in += 1;
        }
        if !churned || measured_in == cfg.seqs {
            while room(&mgr, &running) >= blocks(pending.prompt + pending.output) {
                let _ = mgr.allocate(&[next_id], &vec![0; pending.prompt])?;
                running.push((next_id, pending.output));
                next_id += 1;
                pending = other();
            }
        }
        if running.is_empty() {
            // Cannot happen after the check above (an empty pool admits any request of at most `len`
            // tokens); refused rather than looping forever.
            return Err(ReplayError::NeverFits {
                index: 0,
                need: need * bs,
                most: cfg.pool_blocks * bs,
            });
        }
        // One step: a token for every running sequence that has one to generate.
        for (id, left) in running.iter_mut() {
            if *left > 0 {
                let _ = mgr.append_slot(*id, 0)?;
                *left -= 1;
            }
        }
        // Done: the measured sequences at full length; others leave.
        let measured = |id: SeqId| (id as usize) < cfg.seqs;
        if measured_in == cfg.seqs && running.iter().all(|&(id, left)| !measured(id) || left == 0) {
            return (0..cfg.seqs as SeqId)
                .map(|id| Ok(mgr.block_table(id)?))
                .collect();
        }
        running.retain(|&(id, left)| {
            if left > 0 || measured(id) {
                return true;
            }
            freed += blocks(mgr.num_tokens(id).expect("running"));
            mgr.free(id);
            false
        });
    }
}
// ANCHOR_END: served_tables

/// How far apart a table's consecutive blocks lie: for every pair of neighbouring entries of every table,
/// the distance `|b[i + 1] - b[i]|` in blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    /// Pairs of neighbouring entries.
    pub pairs: usize,
    /// Pairs one block apart, ascending (the table continues a run).
    pub next: usize,
    /// Pairs at most `w` blocks apart, for each `w` of [`Scatter::WINDOWS`].
    pub within: [usize; 3],
    /// The median distance.
    pub median: usize,
}

impl Scatter {
    /// The distances counted in [`Scatter::within`]: at Lab 03's GPU shape, 256 KB, 2 MB and 16 MB of K.
    pub const WINDOWS: [usize; 3] = [8, 64, 512];

    /// The statistics of `tables`.
    pub fn of(tables: &[Vec<BlockId>]) -> Scatter {
        let mut d: Vec<usize> = tables
            .iter()
            .flat_map(|t| t.windows(2).map(|w| w[0].abs_diff(w[1])))
            .collect();
        d.sort_unstable();
        let next = tables
            .iter()
            .flat_map(|t| t.windows(2))
            .filter(|w| w[1] == w[0] + 1)
            .count();
        Scatter {
            pairs: d.len(),
            next,
            within: Self::WINDOWS.map(|w| d.partition_point(|&x| x <= w)),
            median: d.get(d.len() / 2).copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_finishes_and_paged_holds_more() {
        let cfg = TraceConfig {
            requests: 120,
            ..TraceConfig::BOOK
        };
        let reqs = trace(&cfg);
        assert!(reqs
            .iter()
            .all(|r| r.prompt >= 1 && r.output >= 1 && r.prompt + r.output <= 2048));
        let total: usize = reqs.iter().map(|r| r.output).sum();
        let cap = 16 * 2048;
        let max = replay(
            &reqs,
            Layout::Contiguous {
                reserve: Reserve::Max,
            },
            cap,
            2048,
        )
        .unwrap();
        let paged = replay(&reqs, Layout::Paged { block_size: 16 }, cap, 2048).unwrap();
        assert_eq!((max.generated, paged.generated), (total, total));
        assert!(max.peak_running <= 16);
        assert!(paged.used_fraction() > 0.9 && max.used_fraction() < 0.5);
        assert!(paged.mean_running() > 1.5 * max.mean_running());
        assert!(paged.steps < max.steps);
        assert_eq!(trace(&cfg), reqs, "seeded");
    }

    #[test]
    fn a_trace_that_could_never_finish_is_refused() {
        let ok = Request {
            prompt: 10,
            output: 5,
        };
        let max = Layout::Contiguous {
            reserve: Reserve::Max,
        };
        let oracle = Layout::Contiguous {
            reserve: Reserve::Oracle,
        };
        let paged = Layout::Paged { block_size: 16 };
        for layout in [max, oracle, paged] {
            assert!(replay(&[ok], layout, 256, 64).is_ok());
            let empty = Request { output: 0, ..ok };
            assert!(matches!(
                replay(&[ok, empty], layout, 256, 64),
                Err(ReplayError::Empty { index: 1, .. })
            ));
            let long = Request {
                prompt: 300,
                output: 1,
            };
            assert!(matches!(
                replay(&[long], layout, 256, 1024),
                Err(ReplayError::NeverFits { index: 0, .. })
            ));
        }
        // A reservation of max_len slots cannot hold a longer sequence; nor can a pool smaller than it.
        let over = Request {
            prompt: 60,
            output: 10,
        };
        assert!(matches!(
            replay(&[over], max, 256, 64),
            Err(ReplayError::NeverFits {
                need: 70,
                most: 64,
                ..
            })
        ));
        assert!(matches!(
            replay(&[ok], max, 32, 64),
            Err(ReplayError::NeverFits {
                need: 64,
                most: 32,
                ..
            })
        ));
        assert!(matches!(
            replay(&[ok], Layout::Paged { block_size: 0 }, 256, 64),
            Err(ReplayError::Block(BlockError::InvalidConfig(_)))
        ));
    }

    #[test]
    fn served_tables_hold_every_token_in_distinct_blocks() {
        for (seqs, len) in [(4, 100), (16, 2048), (3, 16 * 40)] {
            let cfg = ServedConfig::book(seqs, len, 16);
            let t = served_tables(&cfg).unwrap();
            assert_eq!(t.len(), seqs);
            assert!(t.iter().all(|t| t.len() == len.div_ceil(16)));
            let mut all: Vec<BlockId> = t.iter().flatten().copied().collect();
            assert!(all.iter().all(|&b| b < cfg.pool_blocks));
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), seqs * len.div_ceil(16), "no block in two tables");
            assert_eq!(served_tables(&cfg).unwrap(), t, "seeded");
        }
        // The churn and the decode leave tables that a fresh pool's runs do not describe: some
        // neighbours are not consecutive blocks.
        let s = Scatter::of(&served_tables(&ServedConfig::book(16, 2048, 16)).unwrap());
        assert!(s.next < s.pairs);
        // A pool without room for the sequences is refused, as is a prompt longer than the sequence.
        let small = ServedConfig {
            pool_blocks: 10,
            ..ServedConfig::book(4, 100, 16)
        };
        assert!(matches!(
            served_tables(&small),
            Err(ReplayError::NeverFits { .. })
        ));
        let long = ServedConfig {
            prompt: 101,
            ..ServedConfig::book(4, 100, 16)
        };
        assert!(served_tables(&long).is_err());
        let none = ServedConfig {
            seqs: 0,
            ..ServedConfig::book(4, 100, 16)
        };
        assert_eq!(served_tables(&none).unwrap(), Vec::<Vec<BlockId>>::new());
    }

    /// In the same busy server, the chunked placement keeps most neighbours consecutive (at most 7 in 8
    /// within chunks of 8, more where a sequence's chunks happen to be adjacent) where vLLM's free list
    /// keeps almost none, holding every token in distinct blocks all the same.
    #[test]
    fn the_chunked_placement_keeps_served_sequences_together() {
        use crate::minimodel::paged::block_manager::Placement;
        for len in [2048, 16 * 300] {
            let cfg = ServedConfig::book(16, len, 16);
            let chunked = ServedConfig {
                placement: Placement::Chunked { blocks: 8 },
                ..cfg
            };
            let t = served_tables(&chunked).unwrap();
            let mut all: Vec<BlockId> = t.iter().flatten().copied().collect();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), 16 * len.div_ceil(16), "no block in two tables");
            let (c, v) = (Scatter::of(&t), Scatter::of(&served_tables(&cfg).unwrap()));
            assert!(
                c.next * 10 >= c.pairs * 8,
                "chunked: {} of {} neighbours consecutive",
                c.next,
                c.pairs
            );
            assert!(
                v.next * 10 < v.pairs,
                "free list: {} of {}",
                v.next,
                v.pairs
            );
        }
    }

    #[test]
    fn scatter_counts_the_distance_between_neighbours() {
        let s = Scatter::of(&[vec![0, 1, 2, 3], vec![10, 8, 100, 700]]);
        assert_eq!((s.pairs, s.next), (6, 3));
        // Distances 1, 1, 1, 2, 92, 600.
        assert_eq!(s.within, [4, 4, 5]);
        assert_eq!(s.median, 2);
        assert_eq!(Scatter::of(&[]).pairs, 0);
    }
}
