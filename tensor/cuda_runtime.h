#pragma once
// The CUDA runtime as the tensor layer sees it: device count, device memory from a
// stream-ordered pool, host<->device copies. In a build without CUDA every function here
// reports "no GPU" (cuda_available() is false) and the allocators throw.
#include <cstddef>
#include <string>
#include <vector>

namespace siam::cuda {

bool compiled();         // built with the CUDA backend
bool available();        // compiled and at least one device visible
int device_count();      // 0 without CUDA or GPU
struct DeviceInfo {
  int index;
  std::string name;
  size_t total_memory, free_memory;
  int cc_major, cc_minor, sm_count;
};
std::vector<DeviceInfo> devices();
std::string runtime_versions();  // "CUDA runtime 13.0, driver 13.0, cuBLAS 13.1.0, cuDNN 9.19.0"
std::string unavailable_reason();  // why available() is false

void* device_alloc(size_t nbytes, int device);  // stream-ordered pool (cudaMallocAsync)
void device_free(void* p, int device);
void copy_h2d(void* dst, const void* src, size_t n, int device);
void copy_d2h(void* dst, const void* src, size_t n, int device);
void copy_d2d(void* dst, const void* src, size_t n, int device);
void synchronize(int device);
size_t pool_bytes_in_use(int device);  // bytes currently handed out by the pool

}  // namespace siam::cuda
