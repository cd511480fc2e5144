#pragma once
// Reverse-mode autograd in one idea: every op that produces a tensor from inputs that
// need gradients attaches a Node to its output. The Node remembers the inputs (the edges
// of the graph) and a backward function mapping d(loss)/d(output) to d(loss)/d(input_i).
// backward() walks the nodes in reverse topological order and accumulates (+=) into the
// .grad of leaves. Backward functions run with grad mode off and are written with the
// same differentiable ops, so they work on every device the ops support.
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace siam::autograd {

// Gradients for each input, in input order; an undefined Tensor means "no gradient".
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;  // graph edges
  BackwardFn backward;
  // Frees the saved tensors and edges once the graph has been used.
  void release() {
    inputs.clear();
    backward = nullptr;
  }
};

bool grad_enabled();

// Turns graph recording off in its scope (evaluation, optimizer updates, backward itself).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when any input requires grad and recording is on.
bool needs_graph(const std::vector<Tensor>& inputs);

// Attaches a Node to `out` if needs_graph(inputs); returns `out`. The backward function must
// capture saved tensors through detach() (never `out` itself) so no reference cycle forms.
Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn backward);

// Runs reverse mode from `root`. With no `grad`, root must hold one element and the seed is 1.
void backward(const Tensor& root, const Tensor& grad = Tensor());

}  // namespace siam::autograd

namespace siam {
using autograd::NoGradGuard;
// A tensor sharing data with `x` and cut from the graph.
Tensor detach(const Tensor& x);
}  // namespace siam
