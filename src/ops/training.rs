//! Optimizer steps of the `ai.onnx.preview.training` domain: Adagrad, Adam and Momentum.
//!
//! Each takes a learning rate `R` and step count `T`, then `n` tensors of each of: the
//! parameters X, their gradients G, and the optimizer state (Adagrad: squared-gradient sums H;
//! Momentum: velocities V; Adam: V then H). Outputs are the new X's, then the new states in
//! the same grouping. Updates are elementwise and computed in f64.

use super::util::input;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{ensure, op_err};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    if ctx.node.domain != "ai.onnx.preview.training" {
        return None;
    }
    let rule = match op {
        "Adagrad" => Rule::adagrad(ctx),
        "Adam" => Rule::adam(ctx),
        "Momentum" => Rule::momentum(ctx),
        _ => return None,
    };
    Some(rule.map(|rule| Box::new(Optimizer { rule }) as Box<dyn Kernel>))
}

#[derive(Debug)]
enum Rule {
    Adagrad {
        decay_factor: f64,
        epsilon: f64,
        norm_coefficient: f64,
    },
    Adam {
        alpha: f64,
        beta: f64,
        epsilon: f64,
        norm_coefficient: f64,
        norm_coefficient_post: f64,
    },
    Momentum {
        alpha: f64,
        beta: f64,
        norm_coefficient: f64,
        nesterov: bool,
    },
}

fn float(ctx: &BuildCtx, name: &str, default: Option<f32>) -> Result<f64> {
    match (ctx.attrs().has(name), default) {
        (false, Some(d)) => Ok(d as f64),
        (false, None) => Err(op_err!("missing attribute '{name}'")),
        (true, _) => Ok(ctx.attrs().float_or(name, 0.0)? as f64),
    }
}

impl Rule {
    fn adagrad(ctx: &BuildCtx) -> Result<Rule> {
        Ok(Rule::Adagrad {
            decay_factor: float(ctx, "decay_factor", Some(0.0))?,
            epsilon: float(ctx, "epsilon", Some(1e-6))?,
            norm_coefficient: float(ctx, "norm_coefficient", Some(0.0))?,
        })
    }

    fn adam(ctx: &BuildCtx) -> Result<Rule> {
        Ok(Rule::Adam {
            alpha: float(ctx, "alpha", Some(0.9))?,
            beta: float(ctx, "beta", Some(0.999))?,
            epsilon: float(ctx, "epsilon", Some(1e-6))?,
            norm_coefficient: float(ctx, "norm_coefficient", Some(0.0))?,
            norm_coefficient_post: float(ctx, "norm_coefficient_post", Some(0.0))?,
        })
    }

    fn momentum(ctx: &BuildCtx) -> Result<Rule> {
        let nesterov = match ctx.attrs().string("mode")? {
            Some("standard") => false,
            Some("nesterov") => true,
            Some(m) => return Err(op_err!("unknown mode {m:?}")),
            None => return Err(op_err!("missing attribute 'mode'")),
        };
        Ok(Rule::Momentum {
            alpha: float(ctx, "alpha", None)?,
            beta: float(ctx, "beta", None)?,
            norm_coefficient: float(ctx, "norm_coefficient", None)?,
            nesterov,
        })
    }

    /// State tensors per parameter.
    fn states(&self) -> usize {
        match self {
            Rule::Adam { .. } => 2,
            _ => 1,
        }
    }

    /// One element's step: updates `state` in place and returns the new parameter value.
    /// `r` is the learning rate already adjusted for the step count by `rate`.
    fn step(&self, r: f64, t: f64, x: f64, g: f64, state: &mut [f64]) -> f64 {
        match *self {
            Rule::Adagrad {
                epsilon,
                norm_coefficient,
                ..
            } => {
                let g = norm_coefficient * x + g;
                state[0] += g * g;
                x - r * g / (state[0].sqrt() + epsilon)
            }
            Rule::Adam {
                alpha,
                beta,
                epsilon,
                norm_coefficient,
                norm_coefficient_post,
            } => {
                let g = norm_coefficient * x + g;
                state[0] = alpha * state[0] + (1.0 - alpha) * g;
                state[1] = beta * state[1] + (1.0 - beta) * g * g;
                let x = x - r * state[0] / (state[1].sqrt() + epsilon);
                (1.0 - norm_coefficient_post) * x
            }
            Rule::Momentum {
                alpha,
                beta,
                norm_coefficient,
                nesterov,
            } => {
                let g = norm_coefficient * x + g;
                // The first step (t = 0) takes the whole gradient.
                let beta = if t > 0.0 { beta } else { 1.0 };
                state[0] = alpha * state[0] + beta * g;
                if nesterov {
                    x - r * (g + alpha * state[0])
                } else {
                    x - r * state[0]
                }
            }
        }
    }

    /// The learning rate of step `t`: Adagrad decays it, Adam corrects the moment biases.
    fn rate(&self, r: f64, t: f64) -> f64 {
        match *self {
            Rule::Adagrad { decay_factor, .. } => r / (1.0 + t * decay_factor),
            Rule::Adam { alpha, beta, .. } if t > 0.0 => {
                r * (1.0 - beta.powf(t)).sqrt() / (1.0 - alpha.powf(t))
            }
            _ => r,
        }
    }
}

#[derive(Debug)]
struct Optimizer {
    rule: Rule,
}

fn scalar(t: &Tensor, what: &str) -> Result<f64> {
    let v = t.to_f64_vec()?;
    ensure!(
        v.len() == 1,
        "{what} must be a scalar, got shape {:?}",
        t.shape()
    );
    Ok(v[0])
}

impl Kernel for Optimizer {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let r = scalar(input(inputs, 0)?, "R")?;
        let t = scalar(input(inputs, 1)?, "T")?;
        let groups = 2 + self.rule.states();
        let tensors = &inputs[2..];
        ensure!(
            !tensors.is_empty() && tensors.len().is_multiple_of(groups),
            "expected {groups} tensors per parameter, got {} inputs after R and T",
            tensors.len()
        );
        let n = tensors.len() / groups;
        let rate = self.rule.rate(r, t);
        let mut new_x = Vec::with_capacity(n);
        let mut new_states: Vec<Vec<Tensor>> = vec![Vec::with_capacity(n); groups - 2];
        for p in 0..n {
            let group: Vec<&Tensor> = (0..groups)
                .map(|k| input(tensors, k * n + p))
                .collect::<Result<_>>()?;
            let x = group[0];
            ensure!(
                group.iter().all(|g| g.shape() == x.shape()),
                "parameter {p}: X, G and state shapes differ"
            );
            let values = group
                .iter()
                .map(|g| g.to_f64_vec())
                .collect::<Result<Vec<_>>>()?;
            let (xg, states_in) = values.split_at(2);
            let mut states: Vec<Vec<f64>> = states_in.to_vec();
            let mut state = vec![0.0; states.len()];
            let mut out = Vec::with_capacity(x.len());
            for i in 0..x.len() {
                state.iter_mut().zip(&states).for_each(|(s, v)| *s = v[i]);
                out.push(self.rule.step(rate, t, xg[0][i], xg[1][i], &mut state));
                states.iter_mut().zip(&state).for_each(|(v, s)| v[i] = *s);
            }
            let shape = x.shape().to_vec();
            new_x.push(Tensor::from_vec(shape.clone(), out)?.cast(x.dtype())?);
            for ((dst, src), like) in new_states.iter_mut().zip(states).zip(&group[2..]) {
                dst.push(Tensor::from_vec(shape.clone(), src)?.cast(like.dtype())?);
            }
        }
        new_x.extend(new_states.into_iter().flatten());
        Ok(new_x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: f32) -> Tensor {
        Tensor::from_vec(vec![1], vec![v]).unwrap()
    }

    fn run(rule: Rule, inputs: &[Tensor]) -> Vec<f64> {
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        let out = Optimizer { rule }.run(&refs).unwrap();
        out.iter().flat_map(|o| o.to_f64_vec().unwrap()).collect()
    }

    #[test]
    fn adagrad_step() {
        // r=0.1, t=0, x=1, g=2, h=0: h' = 4, x' = 1 - 0.1·2/(2 + 1e-6).
        let rule = Rule::Adagrad {
            decay_factor: 0.0,
            epsilon: 1e-6,
            norm_coefficient: 0.0,
        };
        let got = run(rule, &[t(0.1), t(0.0), t(1.0), t(2.0), t(0.0)]);
        assert!(
            (got[0] - 0.9).abs() < 1e-6 && (got[1] - 4.0).abs() < 1e-6,
            "{got:?}"
        );
    }

    #[test]
    fn momentum_first_step_takes_the_whole_gradient() {
        // t=0: v' = 0.9·1 + 1·2 = 2.9, x' = 1 - 0.1·2.9 = 0.71.
        let rule = Rule::Momentum {
            alpha: 0.9,
            beta: 0.5,
            norm_coefficient: 0.0,
            nesterov: false,
        };
        let got = run(rule, &[t(0.1), t(0.0), t(1.0), t(2.0), t(1.0)]);
        assert!(
            (got[0] - 0.71).abs() < 1e-6 && (got[1] - 2.9).abs() < 1e-6,
            "{got:?}"
        );
    }

    #[test]
    fn rejects_incomplete_groups() {
        let rule = Rule::Adam {
            alpha: 0.9,
            beta: 0.999,
            epsilon: 1e-6,
            norm_coefficient: 0.0,
            norm_coefficient_post: 0.0,
        };
        let inputs = [t(0.1), t(0.0), t(1.0), t(2.0), t(0.0)];
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        assert!(Optimizer { rule }.run(&refs).is_err());
    }
}
