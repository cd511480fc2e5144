// The CUDA runtime in a build without the CUDA backend: no devices, clear errors.
#include "tensor/cuda_runtime.h"
#include "tensor/error.h"

namespace siam::cuda {

static const char* kReason = "this siam was built without CUDA (nvcc was not found at configure time)";

bool compiled() { return false; }
bool available() { return false; }
int device_count() { return 0; }
std::vector<DeviceInfo> devices() { return {}; }
std::string runtime_versions() { return "CUDA not compiled"; }
std::string unavailable_reason() { return kReason; }
void* device_alloc(size_t, int) { fail(kReason); }
void device_free(void*, int) {}
void copy_h2d(void*, const void*, size_t, int) { fail(kReason); }
void copy_d2h(void*, const void*, size_t, int) { fail(kReason); }
void copy_d2d(void*, const void*, size_t, int) { fail(kReason); }
void synchronize(int) {}
size_t pool_bytes_in_use(int) { return 0; }
size_t pool_peak_bytes(int) { return 0; }
void reset_pool_peak(int) {}

Graph::~Graph() = default;
void Graph::capture(const std::function<void()>&, int) { fail("CUDA graphs: ", kReason); }
void Graph::replay() { fail("CUDA graphs: ", kReason); }
bool capturing() { return false; }

}  // namespace siam::cuda
