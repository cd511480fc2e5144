// The NCCL transport for CUDA tensors: one communicator over the ranks of an MPI group (its
// unique id broadcast through MPI), collectives enqueued on siam's stream (the per-thread
// default stream the kernels use), so they are ordered with the step's kernels and can be
// captured in a CUDA graph. CPU tensors keep going through the MPI group.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "dist/backend.h"

namespace siam::dist {

bool nccl_compiled() { return true; }

namespace {

void check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) fail("NCCL ", what, " failed: ", ncclGetErrorString(rc));
}
void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) fail("CUDA ", what, " failed: ", cudaGetErrorString(rc));
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8:
    case DType::b8: return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

cudaStream_t stream() { return cudaStreamPerThread; }

class NcclGroup final : public Group {
 public:
  NcclGroup(std::unique_ptr<Group> base, int device) : base_(std::move(base)), device_(device) {
    check(cudaSetDevice(device_), "SetDevice");
    ncclUniqueId id;
    if (base_->rank() == 0) check(ncclGetUniqueId(&id), "GetUniqueId");
    Tensor bytes = from_host(&id, {static_cast<int64_t>(sizeof id)}, DType::u8);
    base_->broadcast(bytes, 0);
    std::memcpy(&id, bytes.raw_data(), sizeof id);
    check(ncclCommInitRank(&comm_, base_->size(), id, base_->rank()), "CommInitRank");
  }
  ~NcclGroup() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return base_->rank(); }
  int size() const override { return base_->size(); }
  std::string backend(const Device& d) const override { return d.is_cuda() ? "nccl" : base_->backend(d); }

  void all_reduce(Tensor& t, ReduceOp op) override {
    if (t.device().is_cpu()) return base_->all_reduce(t, op);
    dense(t, "all_reduce");
    check(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), nccl_op(op),
                        comm_, stream()),
          "AllReduce");
  }
  std::unique_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    if (t.device().is_cpu()) return base_->all_reduce_async(t, op);
    all_reduce(t, op);  // stream-ordered: the step's later kernels see the result
    struct Enqueued final : Work {
      void wait() override {}
      bool done() override { return true; }
    };
    return std::make_unique<Enqueued>();
  }
  Tensor all_gather(const Tensor& x) override {
    if (x.device().is_cpu()) return base_->all_gather(x);
    dense(x, "all_gather");
    Shape s = x.shape();
    s[0] *= size();
    Tensor out = empty(s, {x.dtype(), x.device()});
    check(ncclAllGather(x.raw_data(), out.raw_data(), static_cast<size_t>(x.numel()), nccl_type(x.dtype()), comm_,
                        stream()),
          "AllGather");
    return out;
  }
  Tensor reduce_scatter(const Tensor& x, ReduceOp op) override {
    if (x.device().is_cpu()) return base_->reduce_scatter(x, op);
    dense(x, "reduce_scatter");
    if (x.size(0) % size() != 0)
      fail("reduce_scatter: the first dimension (", x.size(0), ") must be a multiple of the ", size(), " ranks");
    Shape s = x.shape();
    s[0] /= size();
    Tensor out = empty(s, {x.dtype(), x.device()});
    check(ncclReduceScatter(x.raw_data(), out.raw_data(), static_cast<size_t>(out.numel()), nccl_type(x.dtype()),
                            nccl_op(op), comm_, stream()),
          "ReduceScatter");
    return out;
  }
  void broadcast(Tensor& t, int root) override {
    if (t.device().is_cpu()) return base_->broadcast(t, root);
    dense(t, "broadcast");
    check(ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root, comm_,
                        stream()),
          "Broadcast");
  }
  void barrier() override {
    check(cudaStreamSynchronize(stream()), "StreamSynchronize");
    base_->barrier();
  }
  std::unique_ptr<Group> split(int color) const override {
    return std::make_unique<NcclGroup>(base_->split(color), device_);
  }
  std::unique_ptr<Group> duplicate() const override { return std::make_unique<NcclGroup>(base_->duplicate(), device_); }

 private:
  static void dense(const Tensor& t, const char* what) {
    if (!t.is_contiguous()) fail(what, ": the tensor must be contiguous");
  }
  std::unique_ptr<Group> base_;
  int device_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

namespace detail {
std::unique_ptr<Group> make_nccl(Group& base, int cuda_device) {
  return std::make_unique<NcclGroup>(base.duplicate(), cuda_device);
}
}  // namespace detail
}  // namespace siam::dist
