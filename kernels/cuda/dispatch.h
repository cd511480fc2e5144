#pragma once
// Routing a kernel entry point to its CUDA twin. Each entry point in kernels/cpu/ that has a
// CUDA implementation begins with
//   SIAM_ON_CUDA(x, gpu::name(args...));
// which returns the CUDA kernel's result when x lives on a GPU. In a build without CUDA the
// line compiles to nothing: no CUDA tensor can exist there. The gpu:: functions are declared
// in kernels/cuda/<family>.h with the same signatures as their CPU twins in kernels/<family>.h.
#if defined(SIAM_HAS_CUDA) && SIAM_HAS_CUDA
#define SIAM_ON_CUDA(t, call)                  \
  do {                                         \
    if ((t).device().is_cuda()) return call;   \
  } while (0)
#else
#define SIAM_ON_CUDA(t, call) \
  do {                        \
  } while (0)
#endif
