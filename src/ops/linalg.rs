//! Det (opset 11): determinants of square matrices in the last two dimensions.

use super::util::input;
use super::{BuildCtx, Kernel};
use crate::ensure;
use crate::error::Result;
use crate::tensor::Tensor;

pub(crate) fn build(op: &str, _ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    (op == "Det").then(|| Ok(Box::new(Det) as Box<dyn Kernel>))
}

#[derive(Debug)]
struct Det;

/// The determinant of an `n × n` row-major matrix by LU decomposition with partial
/// pivoting (in place).
fn determinant(m: &mut [f64], n: usize) -> f64 {
    let mut det = 1.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&a, &b| m[a * n + col].abs().total_cmp(&m[b * n + col].abs()))
            .unwrap_or(col);
        if m[pivot * n + col] == 0.0 {
            return 0.0;
        }
        if pivot != col {
            for k in 0..n {
                m.swap(pivot * n + k, col * n + k);
            }
            det = -det;
        }
        let p = m[col * n + col];
        det *= p;
        for row in col + 1..n {
            let f = m[row * n + col] / p;
            for k in col..n {
                m[row * n + k] -= f * m[col * n + k];
            }
        }
    }
    det
}

impl Kernel for Det {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype().is_float(),
            "Det needs a float tensor, got {}",
            x.dtype()
        );
        let s = x.shape();
        ensure!(
            s.len() >= 2 && s[s.len() - 1] == s[s.len() - 2],
            "Det needs [*, M, M], got {s:?}"
        );
        let n = s[s.len() - 1];
        let mut data = x.to_f64_vec()?;
        let dets: Vec<f64> = if n == 0 {
            vec![1.0; s[..s.len() - 2].iter().product()]
        } else {
            data.chunks_mut(n * n).map(|m| determinant(m, n)).collect()
        };
        let out = Tensor::from_vec(s[..s.len() - 2].to_vec(), dets)?;
        Ok(vec![out.cast(x.dtype())?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn determinants_of_a_batch() {
        // det([[0,1],[2,3]]) = -2; det([[2,0,0],[0,3,0],[1,1,4]]) = 24 (needs no pivot);
        // det([[0,2],[3,0]]) = -6 (needs a row swap).
        let x = Tensor::from_vec(vec![2, 2], vec![0f32, 1.0, 2.0, 3.0]).unwrap();
        let y = Det.run(&[Some(&x)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[] as &[usize]);
        assert!((y.as_slice::<f32>().unwrap()[0] + 2.0).abs() < 1e-6);
        let mut m = [2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 1.0, 1.0, 4.0];
        assert!((determinant(&mut m, 3) - 24.0).abs() < 1e-12);
        let mut m = [0.0, 2.0, 3.0, 0.0];
        assert!((determinant(&mut m, 2) + 6.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_non_square() {
        let x = Tensor::from_vec(vec![2, 3], vec![0f32; 6]).unwrap();
        assert!(Det.run(&[Some(&x)]).is_err());
    }
}
