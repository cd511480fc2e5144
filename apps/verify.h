#pragma once
// `siam verify`: checks siam against a reference file someone else made, and writes reference
// files for others to check against. The file is safetensors; its metadata names what to run
// (an op, one of the seven SSL losses, a layer or a whole backbone, with settings as JSON) and
// its tensors are the inputs, parameters, expected output and expected gradients. The format is
// in docs/verify.md; tools/reference/make_verify_file.py writes one from a PyTorch callable.
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace CLI {
class App;
}

namespace siam::apps {

constexpr const char* kVerifyFormat = "1";  // metadata "siam_verify"

// Default tolerances: an element passes when |siam - reference| <= atol + rtol |reference|.
// f64: both sides compute the same formula in double, so only summation order differs
// (measured 1e-16 to 1e-12 relative on the shipped fixtures and backbones).
// f32: siam rounds every op to f32 while a reference is often computed in f64; a chain of a
// few f32 ops lands within about 1e-5 relative (the op fixtures' worst is 2.7e-5 absolute on
// a loss of 33).
constexpr double kVerifyRtolF64 = 1e-7, kVerifyAtolF64 = 1e-10;
constexpr double kVerifyRtolF32 = 1e-4, kVerifyAtolF32 = 1e-5;

struct VerifyCommand {
  std::string file;              // reference file to check (or, with --write, the spec to read; may be empty)
  std::string write;             // --write OUT: run siam and write a reference file
  std::string kind, name;        // --kind/--name: what to run when --write has no spec file
  std::string settings = "{}";   // --settings JSON, with --kind/--name
  std::string dtype = "auto";    // auto (f64 when the reference is f64, else the inputs' type), f32 or f64
  double rtol = -1, atol = -1;   // < 0: the dtype's default above
  bool gradcheck = false;        // also run finite differences in f64 on the file's inputs
  int64_t gradcheck_elements = -1;  // per tensor; -1: every element (backbones: 6 evenly spaced)
  double gradcheck_eps = -1;        // the finite-difference step; < 0: 1e-6 (backbones: 1e-7)
  uint64_t seed = 0;             // --write: inputs, parameters and grad_output when none are given
  bool list = false;             // print what can be verified and exit
};

// One compared tensor.
struct VerifyRow {
  std::string tensor;  // "output", "grad.0", "grad.param.fc.weight", "gradcheck.input.0"
  Shape shape;
  double max_abs = 0;  // max |siam - reference|
  double max_rel = 0;  // max_abs / max |reference| (0 / 0 = 0)
  int64_t worst = -1;  // flat index of the element furthest outside the tolerance (failures only)
  double got = 0, want = 0;  // at that element
  bool pass = true;
};

struct VerifyReport {
  std::string kind, name, settings;  // settings: the resolved JSON, defaults filled in
  std::string dtype;
  double rtol = 0, atol = 0;
  std::vector<VerifyRow> rows;
  bool pass = true;
};

// Checks `c.file`; prints the table and a JSON line to `out`. Bad files throw siam::Error
// naming the tensor or key.
VerifyReport run_verify(const VerifyCommand& c, std::ostream& out);
// Runs siam and writes `c.write`; prints what it wrote.
void run_verify_write(const VerifyCommand& c, std::ostream& out);
// Every op, loss, layer and backbone `siam verify` knows, with its inputs and settings.
void print_verify_targets(std::ostream& out);

void add_verify_command(CLI::App& app);

}  // namespace siam::apps
