use burn::tensor::{Tensor, Distribution};
use burn_flex::Flex;
use std::time::Instant;
fn t<F: FnMut()>(name: &str, flops: f64, mut f: F) {
    for _ in 0..3 { f(); }
    let reps = 30;
    let s = Instant::now();
    for _ in 0..reps { f(); }
    let dt = s.elapsed().as_secs_f64() / reps as f64;
    println!("{name}: {:.3} ms, {:.1} GFLOP/s", dt * 1e3, flops / dt / 1e9);
}
fn main() {
    let d = Default::default();
    let (m, k, n) = (128usize, 576usize, 1536usize);
    let x2 = Tensor::<Flex, 2>::random([m, k], Distribution::Default, &d);
    let w = Tensor::<Flex, 2>::random([k, n], Distribution::Default, &d);
    let fl = 2.0 * (m * k * n) as f64;
    t("burn 2d", fl, || { let _ = x2.clone().matmul(w.clone()); });
    let a: Vec<f32> = x2.to_data().to_vec().unwrap();
    let b: Vec<f32> = w.to_data().to_vec().unwrap();
    let mut c = vec![0f32; m * n];
    t("gemm direct reuse", fl, || unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0));
    });
    t("gemm direct alloc", fl, || unsafe {
        let mut c = Vec::<f32>::with_capacity(m * n); c.set_len(m * n);
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0));
        std::hint::black_box(&c);
    });
    t("burn 2d again", fl, || { let _ = x2.clone().matmul(w.clone()); });
}
