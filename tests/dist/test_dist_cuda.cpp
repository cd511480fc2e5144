// Collectives and data-parallel training on a GPU (ctest label "cuda"; each test skips with the
// reason where no GPU can be used). With one GPU, as on the project's GPU machine, NCCL can only
// form a one-rank communicator (it refuses two ranks on one device), so:
//   dist_cuda_np1: a one-rank NCCL communicator end to end (collectives, the differentiable
//                  all_gather, SyncBN and the gradient reducer on CUDA tensors);
//   dist_cuda_np2: two ranks sharing the GPU through the MPI backend (CUDA tensors staged
//                  through the host), and a 2-rank GPU run against the 1-rank one.
#include "dist/dist.h"
#include "nn/data_parallel.h"
#include "tensor/cuda_runtime.h"
#include "tests/dist/dist_test_util.h"

using namespace siam;
using namespace siam::disttest;

namespace {

#define SKIP_WITHOUT_GPU()                                                                              \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason(); \
  (void)0

Tensor on_gpu(const Tensor& t) { return copy_to(t, Device::cuda(0), t.dtype()); }

}  // namespace

TEST(DistCuda, OneRankNcclCommunicatorEndToEnd) {
  SKIP_WITHOUT_GPU();
  if (!dist::nccl_compiled()) GTEST_SKIP() << "this build has no NCCL";
  auto self = dist::self_group();
  auto nccl = dist::make_group("nccl", *self, 0);
  EXPECT_EQ(nccl->backend(Device::cuda(0)), "nccl");
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i64}) {
    Tensor x = on_gpu(rank_values({4, 3}, dt, 0));
    Tensor y = fresh(x);
    nccl->all_reduce(y);
    EXPECT_EQ(copy_to(y, Device::cpu(), dt).to_vector(), rank_values({4, 3}, dt, 0).to_vector()) << dtype_name(dt);
    Tensor g = nccl->all_gather(x);
    EXPECT_EQ(g.device(), Device::cuda(0));
    EXPECT_EQ(copy_to(g, Device::cpu(), dt).to_vector(), rank_values({4, 3}, dt, 0).to_vector()) << dtype_name(dt);
    Tensor r = nccl->reduce_scatter(x);
    EXPECT_EQ(copy_to(r, Device::cpu(), dt).to_vector(), rank_values({4, 3}, dt, 0).to_vector()) << dtype_name(dt);
  }
  // SyncBN over the one-rank NCCL group equals batch norm; the gradients pass through NCCL.
  Generator gen(3);
  Tensor x0 = on_gpu(randn({6, 4, 3, 3}, gen)), w0 = on_gpu(randn({4}, gen)), b0 = on_gpu(randn({4}, gen));
  auto run = [&](bool sync) {
    Tensor x = fresh(x0), w = fresh(w0), b = fresh(b0);
    for (Tensor* t : {&x, &w, &b}) t->requires_grad_(true);
    Tensor rm = on_gpu(zeros({4})), rv = on_gpu(ones({4}));
    Tensor y = sync ? sync_batch_norm(x, rm, rv, w, b, 0.1, 1e-5, *nccl) : batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5);
    Tensor g = all_gather(y, *nccl);
    autograd::backward(sum(mul(g, g)));
    return std::vector<Tensor>{y, rm, rv, x.grad(), w.grad(), b.grad()};
  };
  const auto plain = run(false), synced = run(true);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_LT(max_rel_diff(plain[i], synced[i]), 1e-4) << "tensor " << i;
  // The gradient reducer on CUDA parameters: one rank, so the gradients are unchanged.
  Tensor p = on_gpu(full({1000}, 2.0));
  p.requires_grad_(true);
  auto grads = nccl->duplicate();
  nn::GradReducer reducer({p}, *grads, 1.0);
  reducer.backward(sum(mul(p, p)));
  cuda::synchronize(0);
  for (double v : copy_to(p.grad(), Device::cpu(), DType::f32).to_vector()) ASSERT_EQ(v, 4.0);
}

TEST(DistCuda, TwoRanksShareOneGpuThroughMpi) {
  SKIP_WITHOUT_GPU();
  if (world().size() < 2) GTEST_SKIP() << "needs 2 ranks (ctest dist_cuda_np2 runs it under mpirun -np 2)";
  auto mpi = dist::make_group("mpi", world(), 0);
  EXPECT_EQ(mpi->backend(Device::cuda(0)), "mpi (host-staged)");
  const int w = world().size(), r = world().rank();
  Tensor t = on_gpu(rank_values({5}, DType::f32, r));
  mpi->all_reduce(t);
  const std::vector<double> v = copy_to(t, Device::cpu(), DType::f32).to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    double expect = 0;
    for (int k = 0; k < w; ++k) expect += (k + 1) * 10 + static_cast<int>(i % 7);
    EXPECT_EQ(v[i], expect);
  }
  Tensor g = mpi->all_gather(on_gpu(rank_values({2}, DType::f32, r)));
  EXPECT_EQ(g.device(), Device::cuda(0));
  EXPECT_EQ(g.size(0), 2 * w);
}

// SimCLR on the GPU at 1 and 2 ranks (MPI backend, one GPU shared): no farther apart than f32
// rounding moves the 1-rank GPU run from the same run in f64 on the CPU.
TEST(DistCuda, GpuRunAtTwoRanksDiffersOnlyByFloatRounding) {
  SKIP_WITHOUT_GPU();
  if (world().size() < 2) GTEST_SKIP() << "needs 2 ranks (ctest dist_cuda_np2 runs it under mpirun -np 2)";
  World wd("gpu_ws", "f32");
  const std::vector<std::string> gpu{"method.name=\"simclr\"", "run.device=\"cuda\"", "run.dist_backend=\"mpi\""};
  RunOutput one = run_with(1, wd.config, wd.dir + "/g1", gpu);
  RunOutput two = run_with(2, wd.config, wd.dir + "/g2", gpu);
  RunOutput exact = run_with(1, wd.config, wd.dir + "/c64", {"method.name=\"simclr\"", "run.device=\"cpu\"", "run.dtype=\"f64\""});
  if (world().rank() != 0) return;
  const double rounding = max_abs_diff(one, exact), ranks = max_abs_diff(one, two);
  EXPECT_LE(ranks, 2 * rounding) << "GPU f32 at 2 ranks vs 1: " << ranks << "; GPU f32 vs CPU f64: " << rounding;
}
