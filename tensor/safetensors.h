#pragma once
// safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw little-endian data. The format PyTorch users
// share weights in; siam's checkpoints and test fixtures use it.
#include <map>
#include <string>

#include "tensor/tensor.h"

namespace siam {

struct SafeTensors {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" string map
  const Tensor& at(const std::string& name) const;  // throws naming the file's keys
  std::string source;                                // path it was read from
};

// Reads every tensor onto the CPU. Any malformation is a siam::Error naming the file and the
// problem: truncated file, oversized or invalid header, unknown dtype, shape/size mismatch,
// offsets past the end or overlapping.
SafeTensors load_safetensors(const std::string& path);
SafeTensors parse_safetensors(const std::string& bytes, const std::string& name);

// Writes atomically: a temporary file beside the target, flushed and fsync'ed, then renamed.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace siam
