#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace siam {

enum class DType : uint8_t { f32, f64, bf16, i32, i64, u8, b8 };

// bfloat16: the top 16 bits of an IEEE f32. Conversion rounds to nearest even.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float f) {  // NOLINT: implicit on purpose, like a float type
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays NaN
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  operator float() const {  // NOLINT
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

size_t dtype_size(DType t);
const char* dtype_name(DType t);       // "f32", "bf16", ...
DType dtype_from_name(const std::string& name);  // throws siam::Error on unknown
bool is_floating(DType t);             // f32, f64, bf16

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<bool>() { return DType::b8; }

}  // namespace siam

// Calls BODY with `scalar_t` bound to the C++ type of DTYPE, for every dtype.
#define SIAM_DISPATCH_ALL(DTYPE, NAME, ...)                                         \
  [&] {                                                                             \
    switch (DTYPE) {                                                                \
      case ::siam::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }    \
      case ::siam::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }   \
      case ::siam::DType::bf16: { using scalar_t = ::siam::bf16; return __VA_ARGS__(); } \
      case ::siam::DType::i32: { using scalar_t = int32_t; return __VA_ARGS__(); }  \
      case ::siam::DType::i64: { using scalar_t = int64_t; return __VA_ARGS__(); }  \
      case ::siam::DType::u8: { using scalar_t = uint8_t; return __VA_ARGS__(); }   \
      case ::siam::DType::b8: { using scalar_t = bool; return __VA_ARGS__(); }      \
    }                                                                               \
    ::siam::fail(NAME, ": unsupported dtype");                                      \
  }()

// Compute kernels on the CPU run in f32 and f64 (f64 for gradcheck).
#define SIAM_DISPATCH_FLOAT(DTYPE, NAME, ...)                                       \
  [&] {                                                                             \
    switch (DTYPE) {                                                                \
      case ::siam::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }    \
      case ::siam::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }   \
      default: break;                                                               \
    }                                                                               \
    ::siam::fail(NAME, ": expected a f32 or f64 tensor, got ", ::siam::dtype_name(DTYPE)); \
  }()
