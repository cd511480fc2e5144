#include "kernels/precision.h"

#include <atomic>

namespace siam::kernels {

static std::atomic<bool> g_allow_tf32{true};
void set_allow_tf32(bool allow) { g_allow_tf32 = allow; }
bool allow_tf32() { return g_allow_tf32; }

}  // namespace siam::kernels
