// The MPI transport: CPU tensors go to MPI as they are, CUDA tensors through a host copy.
// Every call's status is checked (errors return instead of aborting, and become siam::Error).
// The C API only: the deprecated C++ bindings are neither used nor warning-free.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cstring>

#include "dist/backend.h"

namespace siam::dist {

bool mpi_compiled() { return true; }

namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI ", what, " failed: ", std::string(msg, static_cast<size_t>(len)));
}

MPI_Datatype mpi_type(DType t, const char* what, bool reducing) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::u8: return MPI_UINT8_T;
    case DType::b8: return MPI_UINT8_T;
    case DType::bf16:
      if (reducing) fail(what, ": MPI cannot reduce bf16 tensors; reduce them in f32");
      return MPI_UINT16_T;
  }
  fail(what, ": unsupported dtype");
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

void require_dense(const Tensor& t, const char* what) {
  if (!t.defined()) fail(what, ": the tensor is undefined");
  if (!t.is_contiguous()) fail(what, ": the tensor must be contiguous, got strides of shape ", shape_str(t.shape()));
}

int count_of(const Tensor& t, const char* what) {
  if (t.numel() > INT32_MAX) fail(what, ": ", t.numel(), " elements exceed MPI's int count");
  return static_cast<int>(t.numel());
}

// A host tensor holding t's values: t itself on the CPU, a copy of a CUDA tensor.
Tensor on_host(const Tensor& t) { return t.device().is_cpu() ? t : copy_to(t, Device::cpu(), t.dtype()); }

class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request req, Tensor host, Tensor target) : req_(req), host_(std::move(host)), target_(std::move(target)) {}
  ~MpiWork() override {
    if (req_ != MPI_REQUEST_NULL) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (req_ != MPI_REQUEST_NULL) check(MPI_Wait(&req_, MPI_STATUS_IGNORE), "all_reduce (wait)");
    finish();
  }
  bool done() override {
    if (req_ == MPI_REQUEST_NULL) return true;
    int flag = 0;
    check(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE), "all_reduce (test)");
    if (flag) finish();
    return flag != 0;
  }

 private:
  void finish() {
    if (target_.defined() && !host_.same(target_)) copy_(target_, host_);
    target_ = Tensor();
  }
  MPI_Request req_;
  Tensor host_, target_;
};

bool g_running = false;

class MpiGroup final : public Group {
 public:
  MpiGroup(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    check(MPI_Comm_rank(comm_, &rank_), "Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "Comm_size");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  ~MpiGroup() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend(const Device& d) const override { return d.is_cpu() ? "mpi" : "mpi (host-staged)"; }

  void all_reduce(Tensor& t, ReduceOp op) override {
    require_dense(t, "all_reduce");
    Tensor h = on_host(t);
    check(MPI_Allreduce(MPI_IN_PLACE, h.raw_data(), count_of(t, "all_reduce"), mpi_type(t.dtype(), "all_reduce", true),
                        mpi_op(op), comm_),
          "Allreduce");
    if (!h.same(t)) copy_(t, h);
  }

  std::unique_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    require_dense(t, "all_reduce");
    Tensor h = on_host(t);
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, h.raw_data(), count_of(t, "all_reduce"), mpi_type(t.dtype(), "all_reduce", true),
                         mpi_op(op), comm_, &req),
          "Iallreduce");
    return std::make_unique<MpiWork>(req, h, t);
  }

  Tensor all_gather(const Tensor& x) override {
    require_dense(x, "all_gather");
    if (x.dim() == 0) fail("all_gather: needs a tensor with a first dimension, got a scalar");
    Tensor h = on_host(x);
    Shape s = x.shape();
    s[0] *= size_;
    Tensor out = empty(s, {x.dtype(), Device::cpu()});
    const int n = count_of(x, "all_gather");
    const MPI_Datatype type = mpi_type(x.dtype(), "all_gather", false);
    check(MPI_Allgather(h.raw_data(), n, type, out.raw_data(), n, type, comm_), "Allgather");
    return x.device().is_cpu() ? out : copy_to(out, x.device(), x.dtype());
  }

  Tensor reduce_scatter(const Tensor& x, ReduceOp op) override {
    require_dense(x, "reduce_scatter");
    if (x.dim() == 0 || x.size(0) % size_ != 0)
      fail("reduce_scatter: the first dimension (", x.dim() ? x.size(0) : 0, ") must be a multiple of the ", size_, " ranks");
    Tensor h = on_host(x);
    Shape s = x.shape();
    s[0] /= size_;
    Tensor out = empty(s, {x.dtype(), Device::cpu()});
    check(MPI_Reduce_scatter_block(h.raw_data(), out.raw_data(), count_of(out, "reduce_scatter"),
                                   mpi_type(x.dtype(), "reduce_scatter", true), mpi_op(op), comm_),
          "Reduce_scatter_block");
    return x.device().is_cpu() ? out : copy_to(out, x.device(), x.dtype());
  }

  void broadcast(Tensor& t, int root) override {
    require_dense(t, "broadcast");
    if (root < 0 || root >= size_) fail("broadcast: root ", root, " is not a rank of a group of ", size_);
    Tensor h = on_host(t);
    check(MPI_Bcast(h.raw_data(), count_of(t, "broadcast"), mpi_type(t.dtype(), "broadcast", false), root, comm_),
          "Bcast");
    if (!h.same(t)) copy_(t, h);
  }

  void barrier() override { check(MPI_Barrier(comm_), "Barrier"); }

  std::unique_ptr<Group> split(int color) const override {
    MPI_Comm c;
    check(MPI_Comm_split(comm_, color, rank_, &c), "Comm_split");
    return std::make_unique<MpiGroup>(c, true);
  }
  std::unique_ptr<Group> duplicate() const override {
    MPI_Comm c;
    check(MPI_Comm_dup(comm_, &c), "Comm_dup");
    return std::make_unique<MpiGroup>(c, true);
  }

 private:
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

namespace detail {

std::unique_ptr<Group> mpi_start(Launch& l) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Only the main thread calls MPI (the loader's worker never does).
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "Init_thread");
  }
  g_running = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check(MPI_Comm_rank(MPI_COMM_WORLD, &l.rank), "Comm_rank");
  check(MPI_Comm_size(MPI_COMM_WORLD, &l.size), "Comm_size");
  MPI_Comm node;
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, l.rank, MPI_INFO_NULL, &node), "Comm_split_type");
  check(MPI_Comm_rank(node, &l.local_rank), "Comm_rank");
  check(MPI_Comm_size(node, &l.local_size), "Comm_size");
  MPI_Comm_free(&node);
  MPI_Comm world;
  check(MPI_Comm_dup(MPI_COMM_WORLD, &world), "Comm_dup");
  return std::make_unique<MpiGroup>(world, true);
}

void mpi_finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  g_running = false;
}

void mpi_abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

bool mpi_running() { return g_running; }

std::string mpi_version() {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  std::string s(v, static_cast<size_t>(len));
  if (const size_t cut = s.find_first_of(",\n"); cut != std::string::npos) s.resize(cut);
  return s;
}

}  // namespace detail
}  // namespace siam::dist
