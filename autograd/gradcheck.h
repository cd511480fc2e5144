#pragma once
// Finite-difference gradient check in f64. For the scalar L = sum(f(inputs) * grad_output)
// it compares backward()'s gradient with central differences (L(x+h) - L(x-h)) / 2h for
// every element of every floating input, and reports the worst element per input.
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace siam {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradcheckResult {
  bool ok = true;
  std::string report;  // one line per checked input: worst element, analytic vs numeric
};

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  std::vector<int> skip_inputs;  // floating inputs that take no gradient
};

// inputs: f64 CPU tensors (non-floating ones pass through). grad_output: f64, the output's
// shape, or undefined for all-ones.
GradcheckResult gradcheck(const OpFn& f, const std::vector<Tensor>& inputs,
                          const Tensor& grad_output = Tensor(), const GradcheckOptions& o = {});

}  // namespace siam
