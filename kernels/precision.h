#pragma once
// Numeric precision switches that the CUDA kernels consult. The CPU kernels compute f32 in
// f32 and ignore them.
namespace siam::kernels {

// Whether CUDA GEMM and convolution may use TF32 tensor cores for f32 inputs (10-bit mantissa
// products, f32 accumulation). On by default, as for cuDNN convolutions in PyTorch; off gives
// strict f32 (the parity suite's f32 runs).
void set_allow_tf32(bool allow);
bool allow_tf32();

// Sets allow_tf32 for one scope and restores it after.
class Tf32Guard {
 public:
  explicit Tf32Guard(bool allow) : prev_(allow_tf32()) { set_allow_tf32(allow); }
  ~Tf32Guard() { set_allow_tf32(prev_); }
  Tf32Guard(const Tf32Guard&) = delete;
  Tf32Guard& operator=(const Tf32Guard&) = delete;

 private:
  bool prev_;
};

}  // namespace siam::kernels
