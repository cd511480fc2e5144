// `siam verify`: the registry of what can be run from a file, the comparison, --gradcheck and
// --write. See apps/verify.h and docs/verify.md.
#include "apps/verify.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <functional>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "nn/layers.h"
#include "nn/resnet.h"
#include "nn/vit.h"
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"

namespace siam::apps {

using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------- settings

// The settings object of a file. Every read records the key and its resolved value; done()
// rejects keys nobody read (a misspelt "temprature" is an error, not a silent default).
class Settings {
 public:
  Settings(json j, std::string what) : j_(std::move(j)), what_(std::move(what)) {
    if (!j_.is_object()) fail(what_, ": settings must be a JSON object, got ", j_.dump());
  }
  bool has(const std::string& k) const { return j_.contains(k); }
  double num(const std::string& k, double def) {
    return get<double>(k, def, [](const json& v) { return v.is_number(); }, "a number");
  }
  int64_t integer(const std::string& k, int64_t def) {
    return get<int64_t>(k, def, [](const json& v) { return v.is_number_integer(); }, "an integer");
  }
  bool flag(const std::string& k, bool def) {
    return get<bool>(k, def, [](const json& v) { return v.is_boolean(); }, "true or false");
  }
  std::string str(const std::string& k, const std::string& def, const std::vector<std::string>& allowed) {
    std::string v = get<std::string>(k, def, [](const json& x) { return x.is_string(); }, "a string");
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(what_, ": setting \"", k, "\" is \"", v, "\", expected one of ", list);
    }
    return v;
  }
  // An integer or a list of integers.
  std::vector<int64_t> ints(const std::string& k, const std::vector<int64_t>& def) {
    used_.insert(k);
    if (!j_.contains(k)) {
      resolved_[k] = def;
      return def;
    }
    const json& v = j_[k];
    std::vector<int64_t> out;
    if (v.is_number_integer()) {
      out.push_back(v.get<int64_t>());
    } else if (v.is_array() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); })) {
      for (const auto& x : v) out.push_back(x.get<int64_t>());
    } else {
      fail(what_, ": setting \"", k, "\" is ", v.dump(), ", expected an integer or a list of integers");
    }
    resolved_[k] = out;
    return out;
  }
  // Required: no default.
  int64_t need_integer(const std::string& k, const std::string& why) {
    if (!j_.contains(k)) fail(what_, ": setting \"", k, "\" is required (", why, ")");
    return integer(k, 0);
  }
  void done() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (used_.count(it.key())) continue;
      std::string known;
      for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
      fail(what_, ": unknown setting \"", it.key(), "\"; known: ", known.empty() ? "none" : known);
    }
  }
  const json& resolved() const { return resolved_; }

 private:
  template <class T, class Ok>
  T get(const std::string& k, T def, Ok ok, const char* want) {
    used_.insert(k);
    if (!j_.contains(k)) {
      resolved_[k] = def;
      return def;
    }
    if (!ok(j_[k])) fail(what_, ": setting \"", k, "\" is ", j_[k].dump(), ", expected ", want);
    T v = j_[k].get<T>();
    resolved_[k] = v;
    return v;
  }
  json j_;
  std::string what_;
  std::set<std::string> used_;
  json resolved_ = json::object();
};

// ---------------------------------------------------------------- the registry

using Inputs = std::vector<Tensor>;
using Params = std::map<std::string, Tensor>;

// What a target builds from its settings: a function of the inputs (ops, losses) or a module
// applied to input.0 (layers, backbones).
struct Built {
  std::function<Tensor(const Inputs&)> fn;
  std::shared_ptr<nn::Module> module;
  std::vector<int> no_grad;  // inputs the target stops the gradient of (BYOL's targets, DINO's teacher)
};

struct Target {
  std::string kind, name;
  std::string inputs;    // "z (2N, D)[, positives bool (2N, 2N)]"
  std::string settings;  // "temperature (0.5), impl (fused | composite)"
  size_t min_inputs = 1, max_inputs = 1;
  std::function<Built(Settings&, const Inputs&, const Params&)> build;
  std::function<Inputs(Generator&)> example;  // inputs for --write without a spec file
};

Tensor randn_f64(const Shape& s, Generator& g) { return randn(s, g, {DType::f64}); }

std::function<Inputs(Generator&)> shapes(std::vector<Shape> s) {
  return [s](Generator& g) {
    Inputs in;
    for (const auto& x : s) in.push_back(randn_f64(x, g));
    return in;
  };
}

// Positive values (log, sqrt, rsqrt, pow).
std::function<Inputs(Generator&)> positive(Shape s) {
  return [s](Generator& g) { return Inputs{add(abs(randn_f64(s, g)), 0.5)}; };
}

ssl::LossImpl impl_of(Settings& s) {
  return s.str("impl", "fused", {"fused", "composite"}) == "fused" ? ssl::LossImpl::fused : ssl::LossImpl::composite;
}

Built fn(std::function<Tensor(const Inputs&)> f, std::vector<int> no_grad = {}) {
  Built b;
  b.fn = std::move(f);
  b.no_grad = std::move(no_grad);
  return b;
}

// dim: one integer, a list, or absent (every dimension).
std::vector<int64_t> dims_of(Settings& s) { return s.ints("dim", {}); }

Target unary(const std::string& name, Tensor (*f)(const Tensor&), bool pos = false) {
  return {"op", name, "x", "none", 1, 1,
          [f](Settings&, const Inputs&, const Params&) { return fn([f](const Inputs& x) { return f(x[0]); }); },
          pos ? positive({3, 4}) : shapes({{3, 4}})};
}
Target binary(const std::string& name, Tensor (*f)(const Tensor&, const Tensor&), Shape a, Shape b) {
  return {"op", name, "a, b (broadcast)", "none", 2, 2,
          [f](Settings&, const Inputs&, const Params&) { return fn([f](const Inputs& x) { return f(x[0], x[1]); }); },
          shapes({a, b})};
}

int64_t dim_of(const Inputs& in, size_t i, int64_t d, const char* what) {
  if (in.size() <= i || in[i].dim() <= std::abs(d) - (d < 0 ? 1 : 0))
    fail("input.", i, " needs at least ", (d < 0 ? -d : d + 1), " dimensions (", what, "), got ",
         in.size() <= i ? std::string("none") : shape_str(in[i].shape()));
  return in[i].size(d);
}

// A parameter's shape from the file when present.
std::optional<Shape> param_shape(const Params& p, const std::string& name) {
  auto it = p.find(name);
  if (it == p.end()) return std::nullopt;
  return it->second.shape();
}

// A size the file's parameter gives when present (dimension `dim` of its shape), else a
// required setting.
int64_t size_setting(Settings& s, const std::string& key, const std::optional<Shape>& shape, size_t dim,
                     const std::string& param) {
  if (shape && shape->size() > dim) return s.integer(key, (*shape)[dim]);
  return s.need_integer(key, "no param." + param + " to read it from");
}

Built module(std::shared_ptr<nn::Module> m, Settings& s) {
  m->train(s.flag("training", true));
  Built b;
  b.module = std::move(m);
  return b;
}

std::vector<Target> make_targets() {
  std::vector<Target> t;
  // ---------------------------------------------------------------- ops
  t.push_back(unary("neg", neg));
  t.push_back(unary("exp", exp));
  t.push_back(unary("log", log, true));
  t.push_back(unary("sqrt", sqrt, true));
  t.push_back(unary("rsqrt", rsqrt, true));
  t.push_back(unary("abs", abs));
  t.push_back(unary("relu", relu));
  t.push_back(unary("sigmoid", sigmoid));
  t.push_back(unary("tanh", tanh));
  t.push_back(binary("add", add, {3, 4}, {4}));
  t.push_back(binary("sub", sub, {3, 4}, {4}));
  t.push_back(binary("mul", mul, {3, 4}, {3, 1}));
  t.push_back(binary("div", div, {3, 4}, {4}));
  t.push_back(binary("maximum", maximum, {3, 4}, {3, 4}));
  t.push_back(binary("minimum", minimum, {3, 4}, {3, 4}));
  t.push_back({"op", "matmul", "a, b (torch.matmul's rules: 1-D, 2-D, batched)", "none", 2, 2,
               [](Settings&, const Inputs&, const Params&) { return fn([](const Inputs& x) { return matmul(x[0], x[1]); }); },
               shapes({{2, 3, 4}, {4, 5}})});
  t.push_back({"op", "gelu", "x", "approximate (\"none\" | \"tanh\")", 1, 1,
               [](Settings& s, const Inputs&, const Params&) {
                 bool tanh_approx = s.str("approximate", "none", {"none", "tanh"}) == "tanh";
                 return fn([tanh_approx](const Inputs& x) { return gelu(x[0], tanh_approx); });
               },
               shapes({{3, 4}})});
  t.push_back({"op", "pow", "x (positive for a fractional exponent)", "exponent (2.0)", 1, 1,
               [](Settings& s, const Inputs&, const Params&) {
                 double e = s.num("exponent", 2.0);
                 return fn([e](const Inputs& x) { return pow(x[0], e); });
               },
               positive({3, 4})});
  for (std::string name : {"softmax", "log_softmax"}) {
    t.push_back({"op", name, "x", "dim (-1)", 1, 1,
                 [name](Settings& s, const Inputs&, const Params&) {
                   int64_t d = s.integer("dim", -1);
                   return fn([d, name](const Inputs& x) { return name == "softmax" ? softmax(x[0], d) : log_softmax(x[0], d); });
                 },
                 shapes({{4, 5}})});
  }
  t.push_back({"op", "logsumexp", "x", "dim (-1), keepdim (false)", 1, 1,
               [](Settings& s, const Inputs&, const Params&) {
                 int64_t d = s.integer("dim", -1);
                 bool keep = s.flag("keepdim", false);
                 return fn([d, keep](const Inputs& x) { return logsumexp(x[0], d, keep); });
               },
               shapes({{4, 5}})});
  for (std::string name : {"sum", "mean", "norm"}) {
    t.push_back({"op", name, "x", "dim (an integer or a list; absent: every dimension), keepdim (false)", 1, 1,
                 [name](Settings& s, const Inputs&, const Params&) {
                   std::vector<int64_t> d = dims_of(s);
                   bool keep = s.flag("keepdim", false);
                   return fn([=](const Inputs& x) {
                     return name == "sum" ? sum(x[0], d, keep) : name == "mean" ? mean(x[0], d, keep) : norm(x[0], d, keep);
                   });
                 },
                 shapes({{3, 4, 5}})});
  }
  t.push_back({"op", "var", "x", "dim (an integer or a list; absent: every dimension), unbiased (true), keepdim (false)", 1, 1,
               [](Settings& s, const Inputs& in, const Params&) {
                 std::vector<int64_t> d = dims_of(s);
                 if (d.empty())
                   for (int64_t i = 0; i < (in.empty() ? 0 : in[0].dim()); ++i) d.push_back(i);
                 bool unbiased = s.flag("unbiased", true), keep = s.flag("keepdim", false);
                 return fn([=](const Inputs& x) { return var(x[0], d, unbiased, keep); });
               },
               shapes({{3, 4, 5}})});
  t.push_back({"op", "normalize", "x", "dim (-1), eps (1e-12): F.normalize with p = 2", 1, 1,
               [](Settings& s, const Inputs&, const Params&) {
                 int64_t d = s.integer("dim", -1);
                 double eps = s.num("eps", 1e-12);
                 return fn([=](const Inputs& x) { return normalize(x[0], d, eps); });
               },
               shapes({{4, 6}})});
  t.push_back({"op", "cosine_similarity", "a, b", "dim (-1), eps (1e-8)", 2, 2,
               [](Settings& s, const Inputs&, const Params&) {
                 int64_t d = s.integer("dim", -1);
                 double eps = s.num("eps", 1e-8);
                 return fn([=](const Inputs& x) { return cosine_similarity(x[0], x[1], d, eps); });
               },
               shapes({{4, 6}, {4, 6}})});
  t.push_back({"op", "linear", "x (..., in), weight (out, in)[, bias (out)]", "none", 2, 3,
               [](Settings&, const Inputs&, const Params&) {
                 return fn([](const Inputs& x) { return linear(x[0], x[1], x.size() > 2 ? x[2] : Tensor()); });
               },
               shapes({{4, 5}, {3, 5}, {3}})});
  t.push_back({"op", "conv2d", "x (N, C, H, W), weight (O, C/groups, kH, kW)[, bias (O)]",
               "stride (1), padding (0), dilation (1), groups (1): an integer or [h, w]", 2, 3,
               [](Settings& s, const Inputs&, const Params&) {
                 auto pair = [&](const char* k, int64_t def) {
                   std::vector<int64_t> v = s.ints(k, {def});
                   if (v.size() != 1 && v.size() != 2) fail("conv2d: setting \"", k, "\" must be an integer or [h, w]");
                   return std::pair<int64_t, int64_t>{v[0], v.back()};
                 };
                 Conv2dParams p;
                 std::tie(p.stride_h, p.stride_w) = pair("stride", 1);
                 std::tie(p.pad_h, p.pad_w) = pair("padding", 0);
                 std::tie(p.dil_h, p.dil_w) = pair("dilation", 1);
                 p.groups = s.integer("groups", 1);
                 return fn([p](const Inputs& x) { return conv2d(x[0], x[1], x.size() > 2 ? x[2] : Tensor(), p); });
               },
               shapes({{2, 3, 7, 7}, {4, 3, 3, 3}, {4}})});
  for (std::string name : {"max_pool2d", "avg_pool2d"}) {
    t.push_back({"op", name, "x (N, C, H, W)", "kernel_size (required), stride (kernel_size), padding (0)", 1, 1,
                 [name](Settings& s, const Inputs&, const Params&) {
                   int64_t k = s.need_integer("kernel_size", "the pooling window");
                   int64_t st = s.integer("stride", k), pad = s.integer("padding", 0);
                   return fn([=](const Inputs& x) {
                     return name == "max_pool2d" ? max_pool2d(x[0], k, st, pad) : avg_pool2d(x[0], k, st, pad);
                   });
                 },
                 shapes({{2, 3, 8, 8}})});
  }
  t.push_back({"op", "adaptive_avg_pool2d", "x (N, C, H, W)", "output_size (an integer or [h, w]; 1)", 1, 1,
               [](Settings& s, const Inputs&, const Params&) {
                 std::vector<int64_t> o = s.ints("output_size", {1});
                 if (o.size() != 1 && o.size() != 2) fail("adaptive_avg_pool2d: output_size must be an integer or [h, w]");
                 int64_t h = o[0], w = o.back();
                 return fn([=](const Inputs& x) { return adaptive_avg_pool2d(x[0], h, w); });
               },
               shapes({{2, 3, 7, 5}})});
  t.push_back({"op", "interpolate", "x (N, C, H, W)", "size ([h, w], required), mode (\"bilinear\" | \"bicubic\"), align_corners (false)", 1, 1,
               [](Settings& s, const Inputs&, const Params&) {
                 std::vector<int64_t> o = s.ints("size", {});
                 if (o.size() != 2) fail("interpolate: setting \"size\" is required as [h, w]");
                 bool cubic = s.str("mode", "bilinear", {"bilinear", "bicubic"}) == "bicubic";
                 bool align = s.flag("align_corners", false);
                 return fn([=](const Inputs& x) {
                   return cubic ? interpolate_bicubic(x[0], o[0], o[1], align) : interpolate_bilinear(x[0], o[0], o[1], align);
                 });
               },
               shapes({{1, 2, 5, 6}})});
  t.push_back({"op", "batch_norm",
               "x (N, C[, H, W]), weight (C), bias (C)[, running_mean (C), running_var (C)]: no running statistics "
               "in training uses none; in evaluation they are required",
               "training (true), momentum (0.1), eps (1e-5)", 1, 5,
               [](Settings& s, const Inputs& in, const Params&) {
                 bool training = s.flag("training", true);
                 double momentum = s.num("momentum", 0.1), eps = s.num("eps", 1e-5);
                 if (!training && in.size() < 5)
                   fail("batch_norm: evaluation mode (training = false) needs input.3 running_mean and input.4 running_var");
                 if (in.size() == 2 || in.size() == 4)
                   fail("batch_norm: give weight and bias together (input.1, input.2) and running_mean and running_var "
                        "together (input.3, input.4); got ", in.size(), " inputs");
                 return fn(
                     [=](const Inputs& x) {
                       Tensor w = x.size() > 1 ? x[1] : Tensor(), b = x.size() > 2 ? x[2] : Tensor();
                       // The running statistics are updated in place: work on copies so a
                       // second evaluation (gradcheck) sees the file's values.
                       Tensor rm = x.size() > 3 ? detach(clone(x[3])) : Tensor();
                       Tensor rv = x.size() > 4 ? detach(clone(x[4])) : Tensor();
                       return batch_norm(x[0], rm, rv, w, b, training, momentum, eps);
                     },
                     {3, 4});
               },
               shapes({{4, 3, 2, 2}, {3}, {3}})});
  t.push_back({"op", "layer_norm", "x (..., *normalized_shape)[, weight, bias (normalized_shape)]",
               "normalized_shape (weight's shape, else x's last dimension), eps (1e-5)", 1, 3,
               [](Settings& s, const Inputs& in, const Params&) {
                 Shape def = in.size() > 1 ? in[1].shape() : Shape{dim_of(in, 0, -1, "layer_norm")};
                 std::vector<int64_t> ns = s.ints("normalized_shape", def);
                 double eps = s.num("eps", 1e-5);
                 if (in.size() == 2) fail("layer_norm: give weight (input.1) and bias (input.2) together");
                 return fn([=](const Inputs& x) {
                   return layer_norm(x[0], ns, x.size() > 1 ? x[1] : Tensor(), x.size() > 2 ? x[2] : Tensor(), eps);
                 });
               },
               shapes({{3, 5}, {5}, {5}})});
  t.push_back({"op", "cross_entropy", "logits (N, K), target (i64 class indices (N) or probabilities (N, K))",
               "label_smoothing (0), reduction (\"mean\" | \"sum\" | \"none\")", 2, 2,
               [](Settings& s, const Inputs&, const Params&) {
                 double ls = s.num("label_smoothing", 0.0);
                 std::string r = s.str("reduction", "mean", {"mean", "sum", "none"});
                 Reduction red = r == "mean" ? Reduction::mean : r == "sum" ? Reduction::sum : Reduction::none;
                 return fn([=](const Inputs& x) { return cross_entropy(x[0], x[1], ls, red); });
               },
               [](Generator& g) {
                 Tensor target = from_vector({0, 3, 1, 4}, {4}, {DType::i64});
                 return Inputs{randn_f64({4, 5}, g), target};
               }});
  t.push_back({"op", "scaled_dot_product_attention", "q (..., L, d), k (..., S, d), v (..., S, dv)", "none", 3, 3,
               [](Settings&, const Inputs&, const Params&) {
                 return fn([](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2]); });
               },
               shapes({{2, 3, 4}, {2, 5, 4}, {2, 5, 6}})});

  // ---------------------------------------------------------------- losses
  t.push_back({"loss", "nt_xent",
               "z (2N, D), the two views stacked view-major[, positives bool (2N, 2N)]; without positives row i's "
               "positive is row (i + N) mod 2N",
               "temperature (0.5), impl (\"fused\" | \"composite\")", 1, 2,
               [](Settings& s, const Inputs&, const Params&) {
                 double temp = s.num("temperature", 0.5);
                 ssl::LossImpl impl = impl_of(s);
                 return fn([=](const Inputs& x) { return ssl::nt_xent(x[0], temp, x.size() > 1 ? x[1] : Tensor(), impl); }, {1});
               },
               shapes({{8, 16}})});
  t.push_back({"loss", "info_nce", "q (N, D), k (N, D), queue (K, D) of normalised negatives",
               "temperature (0.2), impl (\"fused\" | \"composite\")", 3, 3,
               [](Settings& s, const Inputs&, const Params&) {
                 double temp = s.num("temperature", 0.2);
                 ssl::LossImpl impl = impl_of(s);
                 return fn([=](const Inputs& x) { return ssl::info_nce(x[0], x[1], x[2], temp, impl); });
               },
               [](Generator& g) {
                 return Inputs{randn_f64({4, 16}, g), randn_f64({4, 16}, g), normalize(randn_f64({32, 16}, g), -1)};
               }});
  for (std::string name : {"byol", "simsiam"}) {
    t.push_back({"loss", name, "p1, p2 (N, D) predictions; z1, z2 (N, D) targets (gradient stopped)",
                 "impl (\"fused\" | \"composite\")", 4, 4,
                 [name](Settings& s, const Inputs&, const Params&) {
                   ssl::LossImpl impl = impl_of(s);
                   return fn(
                       [=](const Inputs& x) {
                         return name == "byol" ? ssl::byol_loss(x[0], x[1], x[2], x[3], impl)
                                               : ssl::simsiam_loss(x[0], x[1], x[2], x[3], impl);
                       },
                       {2, 3});
                 },
                 shapes({{4, 16}, {4, 16}, {4, 16}, {4, 16}})});
  }
  t.push_back({"loss", "dino",
               "student (S B, K) crops crop-major, global crops first; teacher (T B, K) global crops; center (1, K) "
               "or (K); teacher and center get no gradient",
               "student_crops (S; default: the student's rows / (teacher's rows / 2)), student_temp (0.1), "
               "teacher_temp (0.04), impl (\"fused\" | \"composite\")",
               3, 3,
               [](Settings& s, const Inputs& in, const Params&) {
                 int64_t def = 2;
                 if (in.size() >= 2 && in[0].dim() >= 1 && in[1].dim() >= 1 && in[1].size(0) >= 2 && in[1].size(0) % 2 == 0)
                   def = in[0].size(0) / (in[1].size(0) / 2);
                 int64_t crops = s.integer("student_crops", def);
                 double ts = s.num("student_temp", 0.1), tt = s.num("teacher_temp", 0.04);
                 ssl::LossImpl impl = impl_of(s);
                 return fn([=](const Inputs& x) { return ssl::dino_loss(x[0], x[1], x[2], crops, ts, tt, impl); }, {1, 2});
               },
               shapes({{8, 16}, {4, 16}, {1, 16}})});
  t.push_back({"loss", "vicreg", "x (N, D), y (N, D)",
               "sim_coeff (25), std_coeff (25), cov_coeff (1), output (\"loss\" | \"terms\": [loss, invariance, "
               "variance, covariance]), impl (\"fused\" | \"composite\")",
               2, 2,
               [](Settings& s, const Inputs&, const Params&) {
                 double a = s.num("sim_coeff", 25), b = s.num("std_coeff", 25), c = s.num("cov_coeff", 1);
                 bool terms = s.str("output", "loss", {"loss", "terms"}) == "terms";
                 ssl::LossImpl impl = impl_of(s);
                 return fn([=](const Inputs& x) {
                   ssl::VicregLoss r = ssl::vicreg_loss(x[0], x[1], a, b, c, impl);
                   return terms ? stack({r.loss, r.invariance, r.variance, r.covariance}, 0) : r.loss;
                 });
               },
               shapes({{8, 16}, {8, 16}})});
  t.push_back({"loss", "barlow_twins", "z1 (N, D), z2 (N, D)",
               "lambda (0.0051), output (\"loss\" | \"terms\": [loss, on_diag, off_diag]), impl (\"fused\" | \"composite\")",
               2, 2,
               [](Settings& s, const Inputs&, const Params&) {
                 double lambda = s.num("lambda", 0.0051);
                 bool terms = s.str("output", "loss", {"loss", "terms"}) == "terms";
                 ssl::LossImpl impl = impl_of(s);
                 return fn([=](const Inputs& x) {
                   ssl::BarlowLoss r = ssl::barlow_twins_loss(x[0], x[1], lambda, impl);
                   return terms ? stack({r.loss, r.on_diag, r.off_diag}, 0) : r.loss;
                 });
               },
               shapes({{8, 16}, {8, 16}})});

  // ---------------------------------------------------------------- layers
  // Parameters are param.<name> with PyTorch's names; sizes default to what the input and the
  // file's parameters say.
  t.push_back({"layer", "linear", "x (..., in); param.weight (out, in)[, param.bias (out)]",
               "in_features (x's last dimension), out_features (param.weight's rows), bias (param.bias present), "
               "training (true)",
               1, 1,
               [](Settings& s, const Inputs& in, const Params& p) {
                 auto w = param_shape(p, "weight");
                 int64_t i = s.integer("in_features", dim_of(in, 0, -1, "linear"));
                 int64_t o = size_setting(s, "out_features", w, 0, "weight");
                 bool bias = s.flag("bias", w ? p.count("bias") > 0 : true);
                 return module(std::make_shared<nn::Linear>(i, o, bias), s);
               },
               shapes({{4, 5}})});
  t.push_back({"layer", "conv2d", "x (N, C, H, W); param.weight (O, C/groups, k, k)[, param.bias (O)]",
               "in_channels (x's), out_channels and kernel_size (param.weight's), stride (1), padding (0), "
               "dilation (1), groups (1), bias (param.bias present), training (true)",
               1, 1,
               [](Settings& s, const Inputs& in, const Params& p) {
                 auto w = param_shape(p, "weight");
                 int64_t c = s.integer("in_channels", dim_of(in, 0, 1, "conv2d"));
                 int64_t o = size_setting(s, "out_channels", w, 0, "weight");
                 int64_t k = size_setting(s, "kernel_size", w, 2, "weight");
                 int64_t st = s.integer("stride", 1), pad = s.integer("padding", 0), dil = s.integer("dilation", 1);
                 int64_t groups = s.integer("groups", 1);
                 bool bias = s.flag("bias", w ? p.count("bias") > 0 : true);
                 return module(std::make_shared<nn::Conv2d>(c, o, k, st, pad, bias, groups, dil), s);
               },
               [](Generator& g) { return Inputs{randn_f64({2, 3, 6, 6}, g)}; }});
  t.push_back({"layer", "batch_norm",
               "x (N, C) or (N, C, H, W); param.weight, param.bias, param.running_mean, param.running_var, "
               "param.num_batches_tracked (PyTorch's BatchNorm1d / 2d state dict)",
               "num_features (x's C), affine (param.weight present), momentum (0.1), eps (1e-5), training (true)", 1, 1,
               [](Settings& s, const Inputs& in, const Params& p) {
                 int64_t c = s.integer("num_features", dim_of(in, 0, 1, "batch_norm"));
                 bool affine = s.flag("affine", p.empty() || p.count("weight") > 0);
                 double mom = s.num("momentum", 0.1), eps = s.num("eps", 1e-5);
                 return module(std::make_shared<nn::BatchNorm>(c, affine, mom, eps), s);
               },
               shapes({{4, 3, 2, 2}})});
  t.push_back({"layer", "layer_norm", "x (..., D); param.weight (D), param.bias (D)",
               "normalized_shape (x's last dimension), eps (1e-5), elementwise_affine (param.weight present), training (true)",
               1, 1,
               [](Settings& s, const Inputs& in, const Params& p) {
                 int64_t d = s.integer("normalized_shape", dim_of(in, 0, -1, "layer_norm"));
                 double eps = s.num("eps", 1e-5);
                 bool affine = s.flag("elementwise_affine", p.empty() || p.count("weight") > 0);
                 return module(std::make_shared<nn::LayerNorm>(d, eps, affine), s);
               },
               shapes({{3, 5}})});
  t.push_back({"layer", "mlp", "x (..., in); timm's Mlp: param.fc1.*, param.fc2.* (fc1 -> GELU -> fc2)",
               "in_features (x's last dimension), hidden_features (param.fc1.weight's rows), out_features "
               "(param.fc2.weight's rows), training (true)",
               1, 1,
               [](Settings& s, const Inputs& in, const Params& p) {
                 auto f1 = param_shape(p, "fc1.weight"), f2 = param_shape(p, "fc2.weight");
                 int64_t i = s.integer("in_features", dim_of(in, 0, -1, "mlp"));
                 int64_t h = size_setting(s, "hidden_features", f1, 0, "fc1.weight");
                 int64_t o = size_setting(s, "out_features", f2, 0, "fc2.weight");
                 return module(std::make_shared<nn::Mlp>(i, h, o), s);
               },
               shapes({{2, 3, 8}})});
  t.push_back({"layer", "attention",
               "x (N, L, dim); timm's Attention: param.qkv.weight (3 dim, dim)[, param.qkv.bias], param.proj.*",
               "dim (x's last dimension), num_heads (required), qkv_bias (param.qkv.bias present), training (true)", 1, 1,
               [](Settings& s, const Inputs& in, const Params& p) {
                 int64_t d = s.integer("dim", dim_of(in, 0, -1, "attention"));
                 int64_t heads = s.need_integer("num_heads", "the number of attention heads");
                 bool qkv_bias = s.flag("qkv_bias", p.empty() || p.count("qkv.bias") > 0);
                 return module(std::make_shared<nn::MultiheadSelfAttention>(d, heads, qkv_bias), s);
               },
               shapes({{2, 5, 8}})});
  t.push_back({"layer", "projector",
               "x (N, in); an SSL projector / predictor MLP as nn.Sequential: Linear, BatchNorm1d, ReLU, ..., Linear "
               "(param.0.weight, param.1.weight, ...)",
               "dims (required: each Linear's output size), hidden_batch_norm (true), hidden_bias (true), "
               "last_bias (true), last_norm (\"none\" | \"batch_norm\" | \"batch_norm_no_affine\"), training (true)",
               1, 1,
               [](Settings& s, const Inputs& in, const Params&) {
                 ssl::MlpConfig cfg;
                 cfg.dims = s.ints("dims", {});
                 if (cfg.dims.empty()) fail("projector: setting \"dims\" is required, e.g. [2048, 128]");
                 cfg.hidden_batch_norm = s.flag("hidden_batch_norm", true);
                 cfg.hidden_bias = s.flag("hidden_bias", true);
                 cfg.last_bias = s.flag("last_bias", true);
                 std::string n = s.str("last_norm", "none", {"none", "batch_norm", "batch_norm_no_affine"});
                 cfg.last_norm = n == "none" ? ssl::HeadNorm::none
                                 : n == "batch_norm" ? ssl::HeadNorm::batch_norm : ssl::HeadNorm::batch_norm_no_affine;
                 return module(ssl::make_mlp(dim_of(in, 0, -1, "projector"), cfg), s);
               },
               shapes({{6, 8}})});
  t.push_back({"layer", "dino_head",
               "x (N, in); DINO's head: param.mlp.<i>.*, param.last_layer.weight_g, param.last_layer.weight_v",
               "out_dim (required), hidden_dim (2048), bottleneck_dim (256), n_layers (3), use_bn (false), "
               "norm_last_layer (true), training (true)",
               1, 1,
               [](Settings& s, const Inputs& in, const Params&) {
                 ssl::DinoHeadConfig cfg;
                 cfg.out_dim = s.need_integer("out_dim", "the number of prototypes K");
                 cfg.hidden_dim = s.integer("hidden_dim", 2048);
                 cfg.bottleneck_dim = s.integer("bottleneck_dim", 256);
                 cfg.n_layers = s.integer("n_layers", 3);
                 cfg.use_bn = s.flag("use_bn", false);
                 cfg.norm_last_layer = s.flag("norm_last_layer", true);
                 return module(std::make_shared<ssl::DinoHead>(dim_of(in, 0, -1, "dino_head"), cfg), s);
               },
               shapes({{4, 8}})});

  // ---------------------------------------------------------------- backbones
  for (int depth : {18, 34, 50}) {
    t.push_back({"backbone", "resnet" + std::to_string(depth),
                 "x (N, C, H, W); torchvision's state dict as param.<name> (conv1.weight, bn1.running_mean, ...)",
                 "in_channels (x's C), small_input (false: 3x3 stride-1 stem, no max-pool), width (64), "
                 "num_classes (param.fc.weight's rows, else 0: no classifier), zero_init_residual (false), training (true)",
                 1, 1,
                 [depth](Settings& s, const Inputs& in, const Params& p) {
                   nn::ResNetConfig cfg;
                   cfg.depth = depth;
                   cfg.in_channels = s.integer("in_channels", dim_of(in, 0, 1, "resnet"));
                   cfg.small_input = s.flag("small_input", false);
                   cfg.width = s.integer("width", 64);
                   auto fc = param_shape(p, "fc.weight");
                   cfg.num_classes = s.integer("num_classes", fc ? (*fc)[0] : 0);
                   cfg.zero_init_residual = s.flag("zero_init_residual", false);
                   return module(std::make_shared<nn::ResNet>(cfg), s);
                 },
                 [](Generator& g) { return Inputs{randn_f64({2, 1, 16, 16}, g)}; }});
  }
  for (std::string size : {"tiny", "small", "base"}) {
    t.push_back({"backbone", "vit_" + size,
                 "x (N, C, H, W); timm's state dict as param.<name> (cls_token, pos_embed, blocks.0.attn.qkv.weight, ...)",
                 "patch (16), image_size (x's H), in_channels (x's C), depth (12), mlp_ratio (4), num_classes "
                 "(param.head.weight's rows, else 0: the class-token feature), training (true)",
                 1, 1,
                 [size](Settings& s, const Inputs& in, const Params& p) {
                   nn::ViTConfig cfg;
                   cfg.size = size;
                   cfg.patch = s.integer("patch", 16);
                   cfg.image_size = s.integer("image_size", dim_of(in, 0, 2, "vit"));
                   cfg.in_channels = s.integer("in_channels", dim_of(in, 0, 1, "vit"));
                   cfg.depth = s.integer("depth", 12);
                   cfg.mlp_ratio = s.num("mlp_ratio", 4.0);
                   auto head = param_shape(p, "head.weight");
                   cfg.num_classes = s.integer("num_classes", head ? (*head)[0] : 0);
                   return module(std::make_shared<nn::ViT>(cfg), s);
                 },
                 [](Generator& g) { return Inputs{randn_f64({2, 1, 16, 16}, g)}; }});
  }
  return t;
}

const std::vector<Target>& targets() {
  static const std::vector<Target> t = make_targets();
  return t;
}

const Target& find_target(const std::string& kind, const std::string& name, const std::string& where) {
  static const std::set<std::string> kinds = {"op", "loss", "layer", "backbone"};
  if (!kinds.count(kind)) fail(where, ": kind \"", kind, "\" is unknown; expected op, loss, layer or backbone");
  std::string known;
  for (const auto& t : targets()) {
    if (t.kind != kind) continue;
    if (t.name == name) return t;
    known += (known.empty() ? "" : ", ") + t.name;
  }
  fail(where, ": unknown ", kind, " \"", name, "\"; known: ", known, " (siam verify --list)");
}

// ---------------------------------------------------------------- the file

struct Spec {
  const Target* target = nullptr;
  std::string settings_text = "{}";
  Inputs inputs;
  Params params;
  Tensor output, grad_output;
  std::map<size_t, Tensor> grad_inputs;
  std::map<std::string, Tensor> grad_params;
  std::string source;
};

void check_finite(const std::string& name, const Tensor& t, const std::string& file) {
  if (!is_floating(t.dtype())) return;
  std::vector<double> v = t.to_vector();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      fail(file, ": tensor \"", name, "\" has ", v[i], " at flat index ", i, "; a reference file must be finite");
}

Spec read_spec(const std::string& path, bool need_reference) {
  SafeTensors st = load_safetensors(path);
  Spec s;
  s.source = path;
  auto meta = [&](const char* k) -> std::string {
    auto it = st.metadata.find(k);
    if (it == st.metadata.end())
      fail(path, ": metadata \"", k, "\" is missing; a verify file names kind, name and settings (docs/verify.md)");
    return it->second;
  };
  std::string format = meta("siam_verify");
  if (format != kVerifyFormat) fail(path, ": metadata siam_verify is \"", format, "\", this siam reads format ", kVerifyFormat);
  s.target = &find_target(meta("kind"), meta("name"), path);
  if (st.metadata.count("settings")) s.settings_text = st.metadata.at("settings");
  bool module = s.target->kind == "layer" || s.target->kind == "backbone";
  std::map<size_t, Tensor> inputs;
  auto index_of = [&](const std::string& name, const std::string& digits) {
    if (digits.empty() || digits.size() > 3 || !std::all_of(digits.begin(), digits.end(), ::isdigit))
      fail(path, ": tensor \"", name, "\": expected input.<i> or grad.<i> with i a number");
    return static_cast<size_t>(std::stoul(digits));
  };
  for (const auto& [name, t] : st.tensors) {
    check_finite(name, t, path);
    if (name == "output") {
      s.output = t;
    } else if (name == "grad_output") {
      s.grad_output = t;
    } else if (name.rfind("input.", 0) == 0) {
      inputs[index_of(name, name.substr(6))] = t;
    } else if (name.rfind("grad.param.", 0) == 0 && module) {
      s.grad_params[name.substr(11)] = t;
    } else if (name.rfind("param.", 0) == 0 && module) {
      s.params[name.substr(6)] = t;
    } else if (name.rfind("grad.", 0) == 0 && name.rfind("grad.param.", 0) != 0) {
      s.grad_inputs[index_of(name, name.substr(5))] = t;
    } else {
      fail(path, ": unexpected tensor \"", name, "\"; a ", s.target->kind, " file holds input.<i>, ",
           module ? "param.<name>, " : "", "output, grad_output, grad.<i>", module ? ", grad.param.<name>" : "");
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i)
    if (!inputs.count(i)) fail(path, ": tensor \"input.", i, "\" is missing (the file has input.", inputs.rbegin()->first, ")");
  for (auto& [i, t] : inputs) s.inputs.push_back(t);
  const Target& tg = *s.target;
  if (s.inputs.size() < tg.min_inputs)
    fail(path, ": tensor \"input.", s.inputs.size(), "\" is missing: ", tg.kind, " ", tg.name, " takes ",
         tg.min_inputs == tg.max_inputs ? std::to_string(tg.min_inputs) : std::to_string(tg.min_inputs) + " to " + std::to_string(tg.max_inputs),
         " inputs: ", tg.inputs);
  if (s.inputs.size() > tg.max_inputs)
    fail(path, ": tensor \"input.", tg.max_inputs, "\" is one too many: ", tg.kind, " ", tg.name, " takes at most ",
         tg.max_inputs, " inputs: ", tg.inputs);
  for (const auto& [i, g] : s.grad_inputs)
    if (i >= s.inputs.size()) fail(path, ": tensor \"grad.", i, "\" has no input.", i);
  if (need_reference && !s.output.defined())
    fail(path, ": tensor \"output\" is missing: a file to verify holds the expected output (write one with "
         "`siam verify --write OUT ", path, "`)");
  return s;
}

// ---------------------------------------------------------------- running siam

DType run_dtype(const VerifyCommand& c, const Spec& s) {
  if (c.dtype == "f32") return DType::f32;
  if (c.dtype == "f64") return DType::f64;
  if (c.dtype != "auto") fail("--dtype is \"", c.dtype, "\", expected auto, f32 or f64");
  auto f64 = [](const Tensor& t) { return t.defined() && t.dtype() == DType::f64; };
  bool any64 = f64(s.output);
  for (const auto& [i, g] : s.grad_inputs) any64 = any64 || f64(g);
  for (const auto& [n, g] : s.grad_params) any64 = any64 || f64(g);
  if (any64) return DType::f64;
  for (const auto& t : s.inputs)
    if (is_floating(t.dtype())) return t.dtype() == DType::f64 ? DType::f64 : DType::f32;
  return DType::f32;
}

// The target built and ready: inputs converted, parameters loaded.
struct Instance {
  Built built;
  Inputs inputs;  // floating ones in the run dtype, requires_grad unless stopped
  json settings;
};

Instance instantiate(const Spec& s, DType dt) {
  const Target& t = *s.target;
  std::string what = t.kind + " " + t.name;
  json j;
  try {
    j = json::parse(s.settings_text);
  } catch (const std::exception& e) {
    fail(s.source, ": metadata settings is not JSON (", e.what(), "): ", s.settings_text);
  }
  Settings set(j, s.source + ": " + what);
  Instance in;
  in.built = t.build(set, s.inputs, s.params);
  set.done();
  in.settings = set.resolved();
  for (size_t i = 0; i < s.inputs.size(); ++i) {
    Tensor x = s.inputs[i];
    if (is_floating(x.dtype())) {
      x = copy_to(x, Device::cpu(), dt);
      bool stopped = std::find(in.built.no_grad.begin(), in.built.no_grad.end(), static_cast<int>(i)) != in.built.no_grad.end();
      if (!stopped) x.requires_grad_(true);
    }
    in.inputs.push_back(x);
  }
  if (in.built.module) {
    nn::Module& m = *in.built.module;
    if (!s.params.empty()) {
      std::map<std::string, Tensor> sd = m.state_dict();
      for (const auto& [name, want] : sd) {
        auto it = s.params.find(name);
        if (it == s.params.end())
          fail(s.source, ": tensor \"param.", name, "\" is missing; ", what, " with these settings has ", sd.size(),
               " state-dict tensors (", shape_str(want.shape()), " here)");
        if (it->second.shape() != want.shape())
          fail(s.source, ": tensor \"param.", name, "\" is ", shape_str(it->second.shape()), ", ", what,
               " with these settings expects ", shape_str(want.shape()));
      }
      for (const auto& [name, have] : s.params)
        if (!sd.count(name))
          fail(s.source, ": tensor \"param.", name, "\" is not a parameter or buffer of ", what, " with these settings");
      NoGradGuard ng;
      for (const auto& [name, dst] : sd) copy_(dst, s.params.at(name));
    }
    m.to(dt);
    for (const auto& [name, g] : s.grad_params) {
      bool found = false;
      for (const auto& [pn, p] : m.named_parameters()) found = found || pn == name;
      if (!found) fail(s.source, ": tensor \"grad.param.", name, "\" names no parameter of ", what);
    }
  }
  return in;
}

Tensor forward(Instance& in) {
  if (in.built.module) return in.built.module->forward(in.inputs[0]);
  return in.built.fn(in.inputs);
}

std::string run_error_context(const Spec& s) {
  std::ostringstream os;
  os << s.target->kind << " " << s.target->name << " on";
  for (size_t i = 0; i < s.inputs.size(); ++i)
    os << (i ? "," : "") << " input." << i << " " << shape_str(s.inputs[i].shape()) << " " << dtype_name(s.inputs[i].dtype());
  return os.str();
}

struct Outcome {
  Tensor output;
  std::vector<Tensor> grad_inputs;  // undefined where no gradient
  std::vector<std::pair<std::string, Tensor>> grad_params;
};

Tensor run_forward(const Spec& s, Instance& in) {
  try {
    return forward(in);
  } catch (const std::exception& e) {
    fail(s.source, ": running ", run_error_context(s), ": ", e.what());
  }
}

// Backward from `output` (run_forward's) with grad_output (undefined: ones).
Outcome run_backward(const Spec& s, Instance& in, const Tensor& output, const Tensor& grad_output) {
  Outcome o;
  o.output = output;
  Tensor gout = grad_output.defined() ? copy_to(grad_output, Device::cpu(), o.output.dtype()) : ones(o.output.shape(), {o.output.dtype()});
  if (gout.shape() != o.output.shape())
    fail(s.source, ": tensor \"grad_output\" is ", shape_str(gout.shape()), ", siam's output is ", shape_str(o.output.shape()));
  if (o.output.requires_grad()) autograd::backward(o.output, gout);
  for (const auto& x : in.inputs) o.grad_inputs.push_back(x.requires_grad() ? x.grad() : Tensor());
  if (in.built.module)
    for (const auto& [name, p] : in.built.module->named_parameters()) o.grad_params.emplace_back(name, p.grad());
  return o;
}

VerifyRow compare(const std::string& name, const Tensor& got_in, const Tensor& want_in, double rtol, double atol,
                  const std::string& file) {
  if (got_in.defined() && got_in.shape() != want_in.shape())
    fail(file, ": tensor \"", name, "\" is ", shape_str(want_in.shape()), ", siam computes ", shape_str(got_in.shape()));
  VerifyRow r;
  r.tensor = name;
  r.shape = want_in.shape();
  std::vector<double> b = want_in.to_vector();
  std::vector<double> a = got_in.defined() ? got_in.to_vector() : std::vector<double>(b.size(), 0.0);
  double scale = 0, worst = -1;
  for (size_t k = 0; k < a.size(); ++k) {
    double err = std::abs(a[k] - b[k]);
    if (std::isnan(err)) err = INFINITY;
    scale = std::max(scale, std::abs(b[k]));
    r.max_abs = std::max(r.max_abs, err);
    double excess = err - (atol + rtol * std::abs(b[k]));
    if (excess > 0) {
      r.pass = false;
      if (excess > worst) {
        worst = excess;
        r.worst = static_cast<int64_t>(k);
        r.got = a[k];
        r.want = b[k];
      }
    }
  }
  r.max_rel = scale > 0 ? r.max_abs / scale : (r.max_abs > 0 ? INFINITY : 0);
  return r;
}

std::string sci(double v) {
  std::ostringstream os;
  os << std::setprecision(2) << std::scientific << v;
  return os.str();
}

void print_report(const VerifyReport& rep, const std::string& file, std::ostream& out) {
  out << "siam verify " << file << ": " << rep.kind << " " << rep.name << " " << rep.settings << ", run in "
      << rep.dtype << "\n";
  out << "tolerance: |siam - reference| <= " << rep.atol << " + " << rep.rtol << " |reference| per element"
      << " (max rel: max |siam - reference| / max |reference|)\n";
  size_t w = 6;
  for (const auto& r : rep.rows) w = std::max(w, r.tensor.size());
  out << std::left << std::setw(static_cast<int>(w) + 2) << "tensor" << std::setw(18) << "shape" << std::setw(11)
      << "max abs" << std::setw(11) << "max rel" << "result\n";
  for (const auto& r : rep.rows) {
    out << std::left << std::setw(static_cast<int>(w) + 2) << r.tensor << std::setw(18) << shape_str(r.shape)
        << std::setw(11) << sci(r.max_abs) << std::setw(11) << sci(r.max_rel) << (r.pass ? "pass" : "FAIL");
    if (!r.pass) out << "  worst at flat index " << r.worst << ": siam " << r.got << ", reference " << r.want;
    out << "\n";
  }
  int failed = 0;
  for (const auto& r : rep.rows) failed += !r.pass;
  out << (rep.pass ? "PASS" : "FAIL") << ": " << rep.rows.size() - failed << " of " << rep.rows.size()
      << " tensors within tolerance\n";
  json j = {{"command", "verify"}, {"file", file}, {"kind", rep.kind}, {"name", rep.name},
            {"settings", json::parse(rep.settings)}, {"dtype", rep.dtype}, {"rtol", rep.rtol}, {"atol", rep.atol},
            {"pass", rep.pass}};
  json rows = json::array();
  for (const auto& r : rep.rows) {
    auto num = [](double v) { return std::isfinite(v) ? json(v) : json(std::to_string(v)); };
    rows.push_back({{"tensor", r.tensor}, {"shape", r.shape}, {"max_abs", num(r.max_abs)}, {"max_rel", num(r.max_rel)},
                    {"pass", r.pass}});
  }
  j["tensors"] = rows;
  out << j.dump() << "\n";
}

}  // namespace

// ---------------------------------------------------------------- commands

VerifyReport run_verify(const VerifyCommand& c, std::ostream& out) {
  Spec s = read_spec(c.file, true);
  DType dt = run_dtype(c, s);
  Instance in = instantiate(s, dt);
  VerifyReport rep;
  rep.kind = s.target->kind;
  rep.name = s.target->name;
  rep.settings = in.settings.dump();
  rep.dtype = dtype_name(dt);
  rep.rtol = c.rtol >= 0 ? c.rtol : (dt == DType::f64 ? kVerifyRtolF64 : kVerifyRtolF32);
  rep.atol = c.atol >= 0 ? c.atol : (dt == DType::f64 ? kVerifyAtolF64 : kVerifyAtolF32);
  Outcome o = run_backward(s, in, run_forward(s, in), s.grad_output);
  rep.rows.push_back(compare("output", o.output, s.output, rep.rtol, rep.atol, s.source));
  for (const auto& [i, g] : s.grad_inputs) {
    if (!is_floating(s.inputs[i].dtype())) fail(s.source, ": tensor \"grad.", i, "\": input.", i, " is not floating");
    rep.rows.push_back(compare("grad." + std::to_string(i), o.grad_inputs[i], g, rep.rtol, rep.atol, s.source));
  }
  for (const auto& [name, g] : o.grad_params) {
    auto it = s.grad_params.find(name);
    if (it != s.grad_params.end())
      rep.rows.push_back(compare("grad.param." + name, g, it->second, rep.rtol, rep.atol, s.source));
  }
  // A deep network in training mode (batch norm over a few values per channel) is strongly
  // curved: at 1e-6 the central difference's truncation error on a width-4 ResNet-50 reaches
  // 1.7e-3 relative; at 1e-7 it is within tolerance.
  const double gradcheck_eps = c.gradcheck_eps > 0 ? c.gradcheck_eps : (s.target->kind == "backbone" ? 1e-7 : 1e-6);
  if (c.gradcheck) {
    // Finite differences in f64 on the file's values, independent of the reference.
    Instance g = instantiate(s, DType::f64);
    GradcheckOptions go;
    go.eps = gradcheck_eps;
    bool module = g.built.module != nullptr;
    go.max_elements = c.gradcheck_elements >= 0 ? c.gradcheck_elements : (s.target->kind == "backbone" ? 6 : 0);
    std::vector<Tensor> leaves;
    std::vector<std::string> names;
    for (size_t i = 0; i < g.inputs.size(); ++i)
      if (g.inputs[i].requires_grad()) {
        leaves.push_back(g.inputs[i]);
        names.push_back("gradcheck.input." + std::to_string(i));
      }
    if (module)
      for (const auto& [name, p] : g.built.module->named_parameters())
        if (p.requires_grad()) {
          leaves.push_back(p);
          names.push_back("gradcheck.param." + name);
        }
    Tensor gout = s.grad_output.defined() ? copy_to(s.grad_output, Device::cpu(), DType::f64) : Tensor();
    GradcheckResult r = gradcheck_leaves([&] { return forward(g); }, leaves, gout, go);
    for (const auto& e : r.entries) {
      VerifyRow row;
      row.tensor = names[e.index];
      row.shape = e.shape;
      row.max_abs = e.max_abs_err;
      double scale = std::max(std::abs(e.numeric), std::abs(e.analytic));
      row.max_rel = scale > 0 ? e.max_abs_err / scale : 0;
      row.pass = e.ok;
      if (!e.ok) {
        row.worst = e.worst_element;
        row.got = e.analytic;
        row.want = e.numeric;
      }
      rep.rows.push_back(row);
    }
  }
  rep.pass = std::all_of(rep.rows.begin(), rep.rows.end(), [](const VerifyRow& r) { return r.pass; });
  print_report(rep, c.file, out);
  if (c.gradcheck) {
    out << "gradcheck rows: backward's gradient (siam) against central differences (reference) in f64, step " << gradcheck_eps
        << ", tolerance 1e-6 + 1e-4 |numeric|; max rel is relative to the worst element's size\n";
    bool gc_failed = false;
    for (const auto& r : rep.rows) gc_failed = gc_failed || (!r.pass && r.tensor.rfind("gradcheck.", 0) == 0);
    if (gc_failed)
      out << "a gradcheck row failed: rerun with --gradcheck-eps " << gradcheck_eps / 10
          << ". If the error falls about 100x, it was the central difference's truncation error (it shrinks with "
             "the step squared) and the gradient is right; an error that stays is a wrong gradient.\n";
  }
  return rep;
}

void run_verify_write(const VerifyCommand& c, std::ostream& out) {
  Spec s;
  Generator gen(c.seed);
  if (!c.file.empty()) {
    if (!c.kind.empty() || !c.name.empty())
      fail("--write with a spec file takes kind and name from the file; drop --kind/--name");
    s = read_spec(c.file, false);
  } else {
    if (c.kind.empty() || c.name.empty())
      fail("--write needs a spec file (inputs and metadata) or --kind and --name (siam makes example inputs)");
    s.target = &find_target(c.kind, c.name, "--kind/--name");
    s.settings_text = c.settings;
    s.source = "--settings";
    s.inputs = s.target->example(gen);
  }
  DType dt = c.dtype == "auto" ? DType::f64 : run_dtype(c, s);
  manual_seed(c.seed);  // the module's initialisation when the spec has no parameters
  Instance run = instantiate(s, dt);
  // The state dict before the forward pass: training-mode BatchNorm moves its running statistics.
  std::map<std::string, Tensor> params_before;
  if (run.built.module)
    for (const auto& [name, t] : run.built.module->state_dict()) params_before[name] = detach(clone(t));
  const Tensor output = run_forward(s, run);
  // Without a given grad_output, a seeded random one (ones would hide errors that cancel).
  Tensor gout = s.grad_output;
  if (!gout.defined() && output.requires_grad()) gout = randn(output.shape(), gen, {DType::f64});
  Outcome o = run_backward(s, run, output, gout);
  std::map<std::string, Tensor> tensors;
  for (size_t i = 0; i < run.inputs.size(); ++i) {
    tensors["input." + std::to_string(i)] = detach(clone(run.inputs[i]));
    if (o.grad_inputs[i].defined()) tensors["grad." + std::to_string(i)] = o.grad_inputs[i];
  }
  for (const auto& [name, t] : params_before) tensors["param." + name] = t;
  for (const auto& [name, g] : o.grad_params)
    if (g.defined()) tensors["grad.param." + name] = g;
  tensors["output"] = detach(o.output);
  if (gout.defined()) tensors["grad_output"] = copy_to(gout, Device::cpu(), dt);
  std::map<std::string, std::string> meta = {{"siam_verify", kVerifyFormat},
                                             {"kind", s.target->kind},
                                             {"name", s.target->name},
                                             {"settings", run.settings.dump()},
                                             {"producer", std::string("siam ") + SIAM_VERSION},
                                             {"dtype", dtype_name(dt)}};
  save_safetensors(c.write, tensors, meta);
  out << "wrote " << c.write << ": " << s.target->kind << " " << s.target->name << " " << run.settings.dump() << " in "
      << dtype_name(dt) << ", " << tensors.size() << " tensors:";
  for (const auto& [name, t] : tensors) out << " " << name << shape_str(t.shape());
  out << "\n";
}

void print_verify_targets(std::ostream& out) {
  std::string kind;
  for (const auto& t : targets()) {
    if (t.kind != kind) {
      kind = t.kind;
      out << (kind == "op" ? "" : "\n") << (kind == "loss" ? "losses" : kind + "s") << ":\n";
    }
    out << "  " << t.name << "\n      inputs: " << t.inputs << "\n      settings: " << t.settings << "\n";
  }
}

void add_verify_command(CLI::App& app) {
  auto c = std::make_shared<VerifyCommand>();
  auto* cmd = app.add_subcommand(
      "verify",
      "Check siam against a reference file (safetensors: inputs, parameters, expected output and gradients), or "
      "write one with --write. Format: docs/verify.md");
  cmd->add_option("file", c->file, "Reference file to check; with --write, the spec whose inputs to use (optional)");
  cmd->add_option("--write", c->write, "Run siam and write a reference file here");
  cmd->add_option("--kind", c->kind, "With --write and no spec: op, loss, layer or backbone");
  cmd->add_option("--name", c->name, "With --write and no spec: what to run (siam verify --list)");
  cmd->add_option("--settings", c->settings, "With --write and no spec: settings as a JSON object")->capture_default_str();
  cmd->add_option("--dtype", c->dtype, "auto (f64 when the reference is f64, else the inputs' type; --write: f64), f32 or f64")
      ->check(CLI::IsMember({"auto", "f32", "f64"}))
      ->capture_default_str();
  cmd->add_option("--rtol", c->rtol, "Relative tolerance (default: 1e-7 in f64, 1e-4 in f32)");
  cmd->add_option("--atol", c->atol, "Absolute tolerance (default: 1e-10 in f64, 1e-5 in f32)");
  cmd->add_flag("--gradcheck", c->gradcheck, "Also check backward against finite differences in f64 on the file's inputs");
  cmd->add_option("--gradcheck-elements", c->gradcheck_elements,
                  "Elements perturbed per tensor by --gradcheck (default: all; backbones: 6 evenly spaced)");
  cmd->add_option("--gradcheck-eps", c->gradcheck_eps, "The finite-difference step of --gradcheck (default: 1e-6; backbones: 1e-7)");
  cmd->add_option("--seed", c->seed, "With --write: seed of example inputs, parameters and grad_output")->capture_default_str();
  cmd->add_flag("--list", c->list, "List every op, loss, layer and backbone with its inputs and settings");
  cmd->callback([c] {
    if (c->list) {
      print_verify_targets(std::cout);
      return;
    }
    if (!c->write.empty()) {
      run_verify_write(*c, std::cout);
      return;
    }
    if (c->file.empty()) fail("verify: give a reference file (siam verify FILE), --write OUT, or --list");
    VerifyReport r = run_verify(*c, std::cout);
    if (!r.pass) throw CLI::RuntimeError(1);
  });
}

}  // namespace siam::apps
