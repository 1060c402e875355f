//! Timing of the stored-weight kernels: each instruction set on one Q4_1 / Q8_0 / F32 matrix,
//! and a stored Q4_1 projection beside the dense f32 panels of the same numbers, for 1, 8 and
//! 128 rows. `cargo bench -p cola-kernels --bench stored_kernels` (prints microseconds per call).

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use burn_flex::Flex;
use cola_kernels::LayerOps;
use cola_kernels::stored::int8::Int8Kernel;
use cola_kernels::stored::kernels::{Dot, Isa, matmul_dot, matmul_with};
use cola_kernels::stored::{StoredMatrix, WeightFormat, quantize};

fn micros(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / reps as f64
}

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0).collect()
}

fn main() {
    let (n, k) = (3072, 576);
    for format in [WeightFormat::Q4_1, WeightFormat::Q8_0, WeightFormat::F32] {
        let w = StoredMatrix::owned(format, n, k, quantize(format, &values(n * k))).unwrap();
        for m in [1, 8] {
            let x = vec![0.5f32; m * k];
            let mut out = vec![0.0; m * n];
            for isa in Isa::available() {
                let us = micros(100, || matmul_with(isa, &x, m, std::slice::from_ref(&w), &mut out));
                println!("kernel {format} [{n}, {k}] rows {m} {isa:?}: {us:.0} us");
            }
        }
    }
    // The int8 product beside the exact one (both on the thread pool, as in a decoding step).
    for format in [WeightFormat::Q4_1, WeightFormat::Q8_0] {
        for (n, k) in [(3072, 576), (49152, 576)] {
            let w = StoredMatrix::owned(format, n, k, quantize(format, &values(n * k))).unwrap();
            for m in [1, 8, 16, 128] {
                let x = values(m * k);
                let mut out = vec![0.0; m * n];
                let parts = std::slice::from_ref(&w);
                let isa = Isa::detect();
                let exact = micros(50, || matmul_with(isa, &x, m, parts, &mut out));
                let int8: Vec<String> = Int8Kernel::available()
                    .into_iter()
                    .map(|kernel| {
                        let reps = if kernel == Int8Kernel::Portable { 5 } else { 50 };
                        let us = micros(reps, || matmul_dot(isa, Dot::Int8 { kernel }, &x, m, parts, &mut out));
                        format!("int8 {kernel:?} {us:.0} us")
                    })
                    .collect();
                println!("int8 {format} [{n}, {k}] rows {m}: exact {exact:.0} us, {}", int8.join(", "));
            }
        }
    }
    for (n, k) in [(960, 576), (3072, 576), (576, 1536), (49152, 576)] {
        let wv = values(n * k);
        let stored = StoredMatrix::owned(WeightFormat::Q4_1, n, k, quantize(WeightFormat::Q4_1, &wv)).unwrap();
        // The dense path holds `[in, out]`.
        let dense_t: Vec<f32> = (0..k * n).map(|i| wv[(i % n) * k + i / n]).collect();
        let dense = Tensor::<Flex, 2>::from_data(TensorData::new(dense_t, [k, n]), &Default::default());
        for m in [1, 8, 128] {
            let x = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.5f32; m * k], [m, k]), &Default::default());
            let reps = if m == 128 { 10 } else { 50 };
            let a = micros(reps, || {
                std::hint::black_box(Flex::matmul_stored(x.clone(), std::slice::from_ref(&stored)));
            });
            let b = micros(reps, || {
                std::hint::black_box(Flex::matmul_weight(x.clone(), dense.clone()));
            });
            println!("projection [{n}, {k}] rows {m}: stored Q4_1 {a:.0} us, f32 panels {b:.0} us");
        }
    }
}
