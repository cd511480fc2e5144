#pragma once
// A hook on the moment backward() finishes a leaf's gradient: every path into the leaf has
// been summed into its .grad for this pass. Data-parallel training uses it to start
// all-reducing a bucket of gradients while backward still runs (nn::GradReducer).
#include <functional>

#include "tensor/tensor.h"

namespace siam::autograd {

using LeafGradHook = std::function<void(const Tensor& leaf)>;

// Installs `hook` on this thread for the scope's lifetime (scopes nest; the innermost wins).
class LeafGradHookScope {
 public:
  explicit LeafGradHookScope(LeafGradHook hook);
  ~LeafGradHookScope();
  LeafGradHookScope(const LeafGradHookScope&) = delete;
  LeafGradHookScope& operator=(const LeafGradHookScope&) = delete;

 private:
  LeafGradHook* prev_;
  LeafGradHook hook_;
};

}  // namespace siam::autograd
