#pragma once
// Finite-difference gradient check in f64. For the scalar L = sum(f(inputs) * grad_output)
// it compares backward()'s gradient with central differences (L(x+h) - L(x-h)) / 2h for
// every element (or an evenly spaced sample) of every checked tensor, and reports the worst
// element per tensor.
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace siam {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// One checked tensor: its worst element, where "worst" is the largest excess of
// |analytic - numeric| over atol + rtol |numeric|.
struct GradcheckEntry {
  size_t index = 0;        // position in the inputs (gradcheck) or the leaves (gradcheck_leaves)
  Shape shape;
  bool ok = true;
  int64_t checked = 0;     // elements perturbed
  int64_t worst_element = -1;
  double analytic = 0, numeric = 0;  // at the worst element
  double max_abs_err = 0;            // over the checked elements
};

struct GradcheckResult {
  bool ok = true;
  std::string report;  // one line per checked tensor: worst element, analytic vs numeric
  std::vector<GradcheckEntry> entries;
};

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  std::vector<int> skip_inputs;  // floating inputs that take no gradient
  int64_t max_elements = 0;      // per tensor; 0 checks every element, else an evenly spaced sample
};

// inputs: f64 CPU tensors (non-floating ones pass through). grad_output: f64, the output's
// shape, or undefined for all-ones.
GradcheckResult gradcheck(const OpFn& f, const std::vector<Tensor>& inputs,
                          const Tensor& grad_output = Tensor(), const GradcheckOptions& o = {});

// The same check over tensors f reads itself (a module's parameters, say): leaves are f64,
// contiguous CPU tensors with requires_grad, perturbed in place and restored. f computes the
// output from their current values. skip_inputs is ignored; the report names "leaf i".
GradcheckResult gradcheck_leaves(const std::function<Tensor()>& f, const std::vector<Tensor>& leaves,
                                 const Tensor& grad_output = Tensor(), const GradcheckOptions& o = {});

}  // namespace siam
