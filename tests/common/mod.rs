//! Shared by the tests: the GPU tests' device (skip, or fail under `REQUIRE_GPU=1`), and for the
//! paged-attention tests (CPU and GPU) a batch of sequences scattered into an oversized, NaN-poisoned pool
//! through shuffled block tables, with the check of an output against the f64 reference.
#![allow(dead_code)] // each test file uses its own part of it

use modern_attention::gpu::Device;
use modern_attention::minimodel::check::{assert_attn_close, FP16_BAR};
use modern_attention::minimodel::numeric::{convert, DType, Element};
use modern_attention::minimodel::paged::paged_attention::{PagedBatch, PagedKv};
use modern_attention::minimodel::reference::{attention_lowp, attention_ref64};
use modern_attention::minimodel::rng::Rng;
use modern_attention::minimodel::shape::{AttnShape, Mask};

/// The CUDA device, or `None` with `skipped: no CUDA device` printed; with `REQUIRE_GPU=1` a missing
/// device panics instead.
pub fn device() -> Option<Device> {
    match Device::open() {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("REQUIRE_GPU=1 but there is no CUDA device");
            }
            println!("skipped: no CUDA device");
            None
        }
        Err(e) => panic!("a CUDA driver is present but unusable: {e}"),
    }
}

/// A batch of sequences stored in a shuffled pool with spare (poisoned) blocks.
pub struct Setup<T> {
    pub hkv: usize,
    pub d: usize,
    pub bs: usize,
    pub num_blocks: usize,
    pub k_cache: Vec<T>,
    pub v_cache: Vec<T>,
    pub tables: Vec<Vec<usize>>,
    pub lens: Vec<usize>,
    /// Each sequence's K and V contiguous, `(Hkv, len, D)`.
    pub k: Vec<Vec<T>>,
    pub v: Vec<Vec<T>>,
}

pub fn setup<T: Element>(lens: &[usize], hkv: usize, d: usize, bs: usize, seed: u64) -> Setup<T> {
    let mut r = Rng::new(seed);
    let need: usize = lens.iter().map(|l| l.div_ceil(bs)).sum();
    let num_blocks = 2 * need + 3; // oversized: most blocks belong to nobody
    let mut ids: Vec<usize> = (0..num_blocks).collect();
    r.shuffle(&mut ids);
    let mut ids = ids.into_iter();
    let pool_len = num_blocks * hkv * bs * d;
    let mut s = Setup {
        hkv,
        d,
        bs,
        num_blocks,
        k_cache: vec![T::from_f64(f64::NAN); pool_len], // poisoned: only real tokens may be read
        v_cache: vec![T::from_f64(f64::NAN); pool_len],
        tables: Vec::new(),
        lens: lens.to_vec(),
        k: Vec::new(),
        v: Vec::new(),
    };
    for &len in lens {
        let table: Vec<usize> = ids.by_ref().take(len.div_ceil(bs)).collect();
        let k: Vec<T> = convert(&r.normal_vec_f32(hkv * len * d));
        let v: Vec<T> = convert(&r.normal_vec_f32(hkv * len * d));
        for h in 0..hkv {
            for t in 0..len {
                let at = ((table[t / bs] * hkv + h) * bs + t % bs) * d;
                let src = (h * len + t) * d;
                s.k_cache[at..at + d].copy_from_slice(&k[src..src + d]);
                s.v_cache[at..at + d].copy_from_slice(&v[src..src + d]);
            }
        }
        s.tables.push(table);
        s.k.push(k);
        s.v.push(v);
    }
    s
}

impl<T: Element> Setup<T> {
    pub fn kv(&self) -> PagedKv<'_, T> {
        PagedKv::new(
            &self.k_cache,
            &self.v_cache,
            self.num_blocks,
            self.hkv,
            self.bs,
            self.d,
        )
        .unwrap()
    }
    pub fn batch(&self) -> PagedBatch<'_> {
        PagedBatch {
            tables: &self.tables,
            seq_lens: &self.lens,
        }
    }
    /// Check `o: (S, Hq, Nq, D)` sequence by sequence against the reference on the contiguous K and V.
    pub fn check(&self, name: &str, q: &[T], o: &[T], hq: usize, nq: usize, mask: Mask) {
        let row = hq * nq * self.d;
        for (i, &len) in self.lens.iter().enumerate() {
            let s = AttnShape::new(1, hq, self.hkv, nq, len, self.d).unwrap();
            let qs = &q[i * row..(i + 1) * row];
            let reference = attention_ref64(qs, &self.k[i], &self.v[i], &s, mask).unwrap();
            let lowp = attention_lowp(qs, &self.k[i], &self.v[i], &s, mask, T::DTYPE).unwrap();
            let out: Vec<f64> = o[i * row..(i + 1) * row]
                .iter()
                .map(|x| x.to_f64())
                .collect();
            let bar = (T::DTYPE == DType::F16).then_some(FP16_BAR);
            let full = format!(
                "{name} seq {i} len {len} (Hq={hq}, Hkv={}, Nq={nq}, D={}, B={}) {}",
                self.hkv,
                self.d,
                self.bs,
                mask.name()
            );
            assert_attn_close(&full, &out, &lowp, &reference, T::DTYPE, len, bar);
        }
    }
}
