#pragma once
// The precisions the GEMM and convolution tests run each case in: strict f32 (TF32 off), TF32,
// bf16 (f32 accumulation) and f64, with their names and tensor dtypes. The tolerances stay
// beside each test, since they differ per kernel family.
#include "tensor/tensor.h"

namespace siam::test {

enum class Prec { f32, tf32, bf16, f64 };
inline constexpr Prec kAllPrec[] = {Prec::f32, Prec::tf32, Prec::bf16, Prec::f64};

inline const char* prec_name(Prec p) {
  switch (p) {
    case Prec::f32: return "f32 strict";
    case Prec::tf32: return "TF32";
    case Prec::bf16: return "bf16";
    case Prec::f64: return "f64";
  }
  return "?";
}
inline DType prec_dtype(Prec p) { return p == Prec::bf16 ? DType::bf16 : p == Prec::f64 ? DType::f64 : DType::f32; }

}  // namespace siam::test
