#pragma once
// The CUDA runtime as the tensor layer sees it: device count, device memory from a
// stream-ordered pool, host<->device copies. In a build without CUDA every function here
// reports "no GPU" (cuda_available() is false) and the allocators throw.
#include <cstddef>
#include <functional>
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
size_t pool_peak_bytes(int device);    // the most handed out at once since the last reset
void reset_pool_peak(int device);

// A CUDA graph of work on siam's stream: capture a step once, replay it many times.
//
// While a step is captured, device memory it allocates becomes graph memory (fixed
// addresses, so tensors made during the capture, gradients and the loss among them, stay
// valid and are rewritten by every replay); memory that existed before the capture and is
// released during it is kept alive until the graph is destroyed, since the captured kernels
// still read it. Anything that synchronises with the host inside the step (reading a value
// back, a blocking copy) makes the capture fail with a clear error: the step must not do it.
// Warm up with one eager step first, so lazily created state (optimizer buffers, library
// handles, algorithm choices) exists before the capture.
class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Runs `step` once under capture on `device` (its work is recorded, not executed) and
  // instantiates the graph. Throws if the step does something that cannot be captured.
  void capture(const std::function<void()>& step, int device = 0);
  // Launches the captured work on siam's stream (asynchronous).
  void replay();
  bool captured() const { return exec_ != nullptr; }

 private:
  friend void device_free(void* p, int device);
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
  int device_ = 0;
  std::vector<void*> kept_;  // pre-capture allocations released during the capture
};
bool capturing();  // this thread is capturing a Graph now

}  // namespace siam::cuda
