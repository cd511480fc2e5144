// The CUDA runtime for the tensor layer: device discovery, a stream-ordered memory pool
// per device (cudaMallocAsync on the device's default pool, with a release threshold so
// freed blocks are kept for reuse), and synchronous copies. Compiled only when CUDA is.
#include "tensor/cuda_runtime.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <mutex>
#include <unordered_set>

#include "tensor/error.h"

namespace siam::cuda {

#define SIAM_CUDA_OK(expr)                                                                     \
  do {                                                                                         \
    cudaError_t e_ = (expr);                                                                   \
    if (e_ != cudaSuccess) ::siam::fail(__FILE__, ":", __LINE__, ": ", #expr, ": ", cudaGetErrorString(e_)); \
  } while (0)

namespace {
std::once_flag probe_once;
int n_devices = 0;
std::string reason;
constexpr int kMaxDevices = 16;
std::once_flag pool_once[kMaxDevices];

void probe() {
  std::call_once(probe_once, [] {
    cudaError_t e = cudaGetDeviceCount(&n_devices);
    if (e != cudaSuccess) {
      n_devices = 0;
      int drv = 0;
      cudaDriverGetVersion(&drv);
      reason = drv == 0 ? std::string("no GPU: no NVIDIA driver is loaded")
                        : std::string("no GPU: ") + cudaGetErrorString(e);
      cudaGetLastError();
    } else if (n_devices == 0) {
      reason = "no GPU: the CUDA runtime sees no device";
    }
  });
}

void setup_pool(int device) {
  std::call_once(pool_once[device], [device] {
    cudaMemPool_t pool;
    SIAM_CUDA_OK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;  // keep freed memory in the pool instead of returning it
    SIAM_CUDA_OK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  });
}
}  // namespace

bool compiled() { return true; }
bool available() { probe(); return n_devices > 0; }
int device_count() { probe(); return n_devices; }
std::string unavailable_reason() { probe(); return reason; }

std::vector<DeviceInfo> devices() {
  std::vector<DeviceInfo> r;
  for (int i = 0; i < device_count(); ++i) {
    cudaDeviceProp p{};
    SIAM_CUDA_OK(cudaGetDeviceProperties(&p, i));
    size_t free_b = 0, total_b = 0;
    SIAM_CUDA_OK(cudaSetDevice(i));
    SIAM_CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
    r.push_back({i, p.name, total_b, free_b, p.major, p.minor, p.multiProcessorCount});
  }
  return r;
}

std::string runtime_versions() {
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  int bl_major = 0, bl_minor = 0, bl_patch = 0;
  cublasGetProperty(MAJOR_VERSION, &bl_major);
  cublasGetProperty(MINOR_VERSION, &bl_minor);
  cublasGetProperty(PATCH_LEVEL, &bl_patch);
  size_t dnn = cudnnGetVersion();
  auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  std::string r = "CUDA runtime " + ver(rt) + ", driver " + (drv ? ver(drv) : std::string("none")) +
                  ", cuBLAS " + std::to_string(bl_major) + "." + std::to_string(bl_minor) + "." +
                  std::to_string(bl_patch) + ", cuDNN " + std::to_string(dnn / 10000) + "." +
                  std::to_string(dnn % 10000 / 100) + "." + std::to_string(dnn % 100);
  return r;
}

// The capture in progress on this thread, and the allocations made during it.
namespace {
thread_local Graph* g_capture = nullptr;
thread_local std::unordered_set<void*>* g_capture_allocs = nullptr;
}  // namespace

bool capturing() { return g_capture != nullptr; }

void* device_alloc(size_t n, int device) {
  if (!available()) fail("cannot allocate on cuda:", device, ": ", reason);
  if (device < 0 || device >= n_devices || device >= kMaxDevices) fail("no device cuda:", device, " (", n_devices, " visible)");
  setup_pool(device);
  SIAM_CUDA_OK(cudaSetDevice(device));
  void* p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, n, cudaStreamPerThread);
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail("out of GPU memory on cuda:", device, ": could not allocate ", n, " bytes (",
         pool_bytes_in_use(device), " bytes in use by siam)");
  }
  if (g_capture_allocs) g_capture_allocs->insert(p);
  return p;
}

void device_free(void* p, int device) {
  cudaSetDevice(device);
  if (g_capture && !g_capture_allocs->erase(p)) {
    // Allocated before the capture: the captured kernels may read it, so it lives as long
    // as the graph. (A free node may only free graph memory anyway.)
    g_capture->kept_.push_back(p);
    return;
  }
  cudaFreeAsync(p, cudaStreamPerThread);
}

// ---------------------------------------------------------------- graphs

Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  if (!kept_.empty()) {
    cudaSetDevice(device_);
    cudaStreamSynchronize(cudaStreamPerThread);  // replays in flight still read them
    for (void* p : kept_) cudaFreeAsync(p, cudaStreamPerThread);
  }
}

void Graph::capture(const std::function<void()>& step, int device) {
  if (g_capture) fail("CUDA graph capture: a capture is already in progress on this thread");
  if (exec_) fail("CUDA graph capture: this graph was already captured");
  if (!available()) fail("CUDA graph capture: ", reason);
  device_ = device;
  SIAM_CUDA_OK(cudaSetDevice(device));
  setup_pool(device);
  std::unordered_set<void*> allocs;
  SIAM_CUDA_OK(cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeThreadLocal));
  g_capture = this;
  g_capture_allocs = &allocs;
  std::string error;
  try {
    step();
  } catch (const std::exception& e) {
    error = e.what();
  }
  g_capture = nullptr;
  g_capture_allocs = nullptr;
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(cudaStreamPerThread, &graph);
  if (!error.empty() || e != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    fail("CUDA graph capture failed: ",
         !error.empty() ? error : std::string(cudaGetErrorString(e)),
         " (a captured step must not synchronise with the host: no reading values back, no blocking copies)");
  }
  graph_ = graph;
  cudaGraphExec_t exec = nullptr;
  // Graph memory still held when the graph is launched again is freed first, so tensors made
  // in the capture keep their addresses from replay to replay.
  SIAM_CUDA_OK(cudaGraphInstantiateWithFlags(&exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch));
  exec_ = exec;
}

void Graph::replay() {
  if (!exec_) fail("CUDA graph replay: nothing was captured");
  SIAM_CUDA_OK(cudaSetDevice(device_));
  SIAM_CUDA_OK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), cudaStreamPerThread));
}

size_t pool_bytes_in_use(int device) {
  if (!available()) return 0;
  cudaMemPool_t pool;
  SIAM_CUDA_OK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t used = 0;
  SIAM_CUDA_OK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
  return used;
}

size_t pool_peak_bytes(int device) {
  if (!available()) return 0;
  cudaMemPool_t pool;
  SIAM_CUDA_OK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t high = 0;
  SIAM_CUDA_OK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high));
  return high;
}

void reset_pool_peak(int device) {
  if (!available()) return;
  cudaMemPool_t pool;
  SIAM_CUDA_OK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t zero = 0;  // resets the high watermark to the current use
  SIAM_CUDA_OK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
}

void copy_h2d(void* dst, const void* src, size_t n, int device) {
  SIAM_CUDA_OK(cudaSetDevice(device));
  SIAM_CUDA_OK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, cudaStreamPerThread));
  SIAM_CUDA_OK(cudaStreamSynchronize(cudaStreamPerThread));
}

void copy_d2h(void* dst, const void* src, size_t n, int device) {
  SIAM_CUDA_OK(cudaSetDevice(device));
  SIAM_CUDA_OK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, cudaStreamPerThread));
  SIAM_CUDA_OK(cudaStreamSynchronize(cudaStreamPerThread));
}

void copy_d2d(void* dst, const void* src, size_t n, int device) {
  SIAM_CUDA_OK(cudaSetDevice(device));
  SIAM_CUDA_OK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cudaStreamPerThread));
}

void synchronize(int device) {
  SIAM_CUDA_OK(cudaSetDevice(device));
  SIAM_CUDA_OK(cudaDeviceSynchronize());
}

}  // namespace siam::cuda
