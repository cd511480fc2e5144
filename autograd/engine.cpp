#include <unordered_map>
#include <unordered_set>

#include "autograd/hooks.h"
#include "autograd/node.h"
#include "autograd/ops.h"

namespace siam {

Tensor detach(const Tensor& x) { return x.as_strided(x.shape(), x.strides(), x.offset()); }

namespace autograd {

static thread_local bool g_grad_enabled = true;

static thread_local LeafGradHook* g_leaf_hook = nullptr;

LeafGradHookScope::LeafGradHookScope(LeafGradHook hook) : prev_(g_leaf_hook), hook_(std::move(hook)) { g_leaf_hook = &hook_; }
LeafGradHookScope::~LeafGradHookScope() { g_leaf_hook = prev_; }

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool needs_graph(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn fn) {
  if (!needs_graph(inputs)) return out;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(fn);
  out.impl().grad_fn = std::move(node);
  out.impl().requires_grad = true;
  return out;
}

// Whether g can become a leaf's .grad as it is, without a copy: nothing else can see its memory
// (the only handle, on a dense tensor spanning a storage no other tensor shares) and it has
// no autograd history. A parameter's gradient from its op's backward usually is.
static bool sole_owner(const Tensor& g) {
  const TensorImpl& i = g.impl();
  return g.impl_ptr().use_count() == 1 && i.storage.use_count() == 1 && g.is_contiguous() && g.offset() == 0 &&
         g.nbytes() == i.storage->nbytes && !i.grad_fn && !i.requires_grad;
}

void backward(const Tensor& root, const Tensor& grad) {
  if (!root.requires_grad())
    fail("backward() on a tensor that does not require grad (no input had requires_grad, or it "
         "was computed under NoGradGuard)");
  Tensor seed = grad;
  if (!seed.defined()) {
    if (root.numel() != 1)
      fail("backward() without a gradient needs a scalar, got shape ", shape_str(root.shape()));
    seed = full(root.shape(), 1.0, {root.dtype(), root.device()});
  } else if (seed.shape() != root.shape()) {
    fail("backward(): gradient shape ", shape_str(seed.shape()), " differs from tensor shape ",
         shape_str(root.shape()));
  }

  // Iterative post-order DFS over tensors that carry a grad_fn; gives a topological order.
  std::vector<Tensor> order;
  std::unordered_set<const TensorImpl*> seen;
  std::vector<std::pair<Tensor, size_t>> stack{{root, 0}};
  seen.insert(root.impl_ptr().get());
  while (!stack.empty()) {
    auto& [t, next] = stack.back();
    const auto& fn = t.grad_fn();
    if (fn && next < fn->inputs.size()) {
      const Tensor& in = fn->inputs[next++];
      if (in.defined() && in.requires_grad() && seen.insert(in.impl_ptr().get()).second)
        stack.push_back({in, 0});
      continue;
    }
    order.push_back(t);
    stack.pop_back();
  }

  NoGradGuard no_grad;
  std::unordered_map<const TensorImpl*, Tensor> grads;
  grads[root.impl_ptr().get()] = seed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const Tensor& t = *it;
    auto g_it = grads.find(t.impl_ptr().get());
    if (g_it == grads.end()) continue;  // no path carried a gradient here
    Tensor g = std::move(g_it->second);
    grads.erase(g_it);
    if (t.is_leaf()) {
      if (!t.grad().defined()) t.set_grad(sole_owner(g) ? g : clone(g));
      else add_(t.grad(), g);
      // Reverse topological order: nothing after this point adds to this leaf.
      if (g_leaf_hook) (*g_leaf_hook)(t);
      continue;
    }
    auto node = t.grad_fn();
    if (!node->backward)
      fail("backward through ", node->name, " a second time: the graph is freed after backward()");
    std::vector<Tensor> in_grads = node->backward(g);
    SIAM_CHECK(in_grads.size() == node->inputs.size(), node->name, ": backward returned ",
               in_grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      const Tensor& in = node->inputs[i];
      if (!in.defined() || !in.requires_grad() || !in_grads[i].defined()) continue;
      SIAM_CHECK(in_grads[i].shape() == in.shape(), node->name, ": gradient for input ", i,
                 " has shape ", shape_str(in_grads[i].shape()), ", input has ", shape_str(in.shape()));
      auto& slot = grads[in.impl_ptr().get()];
      // A sum that nothing else holds takes the next term in place (same values as add()).
      if (!slot.defined()) slot = in_grads[i];
      else if (sole_owner(slot) && slot.dtype() == in_grads[i].dtype()) add_(slot, in_grads[i]);
      else slot = add(slot, in_grads[i]);
    }
    node->release();
  }
}

}  // namespace autograd
}  // namespace siam
