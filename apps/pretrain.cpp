#include "apps/pretrain.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>

#include "apps/eval.h"
#include "apps/metrics_log.h"
#include "apps/mine.h"
#include "nn/checkpoint.h"
#include "tensor/cuda_runtime.h"
#include "tensor/rng.h"

namespace siam::apps {

namespace fs = std::filesystem;

namespace {

// The dropout / drop-path stream starts far from the counters the initial weights use.
constexpr uint64_t kDropoutOffset = uint64_t{1} << 60;

// Rows `idx` of a set, copied.

// Neighbour lists over the full training set, re-indexed to the images kept for training
// (keep[new] = old). A neighbour that was held out becomes the anchor itself with similarity
// -inf, which the mined generator never picks.
std::string duration_str(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = std::llround(seconds);
  std::ostringstream os;
  if (s >= 3600) os << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s / 60) % 60 << "m";
  else if (s >= 60) os << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else os << s << "s";
  return os.str();
}

std::string metric_str(const std::map<std::string, double>& m) {
  std::ostringstream os;
  bool first = true;
  for (const auto& [k, v] : m) {
    os << (first ? "" : ", ") << k << " = " << v;
    first = false;
  }
  return os.str();
}

// ---- Ctrl-C: the handler only raises a flag; the loop saves a checkpoint at the next step
// boundary. SA_RESETHAND makes a second Ctrl-C end the process at once.
std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) { g_interrupted.store(true); }

class SigintGuard {
 public:
  SigintGuard() {
    g_interrupted.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_);
  }
  ~SigintGuard() { sigaction(SIGINT, &old_, nullptr); }
  SigintGuard(const SigintGuard&) = delete;
  SigintGuard& operator=(const SigintGuard&) = delete;

 private:
  struct sigaction old_ {};
};

// Progress on stderr: a bar redrawn in place on a terminal, plain lines every log_every steps
// otherwise (logs, CI).
class Console {
 public:
  Console(bool on, int64_t epochs, int64_t spe, int64_t total)
      : on_(on), tty_(on && isatty(STDERR_FILENO)), epochs_(epochs), spe_(spe), total_(total) {}

  void step(int64_t step, double loss, double lr, double views_per_s, double eta_s, bool log_line) {
    if (!on_) return;
    const int64_t epoch = (step - 1) / spe_;
    const int64_t in_epoch = step - epoch * spe_;
    // A terminal is redrawn at most 10 times a second (tiny models take thousands of steps a second).
    const auto now = std::chrono::steady_clock::now();
    if (tty_ && in_epoch < spe_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    std::ostringstream os;
    os << "epoch " << epoch + 1 << "/" << epochs_;
    if (tty_) {
      const int width = 24;
      const int filled = static_cast<int>(width * in_epoch / spe_);
      os << " [" << std::string(filled, '=') << std::string(width - filled, ' ') << "]";
    }
    os << " step " << step << "/" << total_ << " loss " << std::setprecision(5) << loss << " lr "
       << std::setprecision(3) << lr << " " << std::fixed << std::setprecision(0) << views_per_s << " views/s ETA "
       << duration_str(eta_s);
    if (tty_) {
      std::cerr << "\r" << os.str() << "\033[K" << std::flush;
      dirty_ = true;
    } else if (log_line) {
      std::cerr << os.str() << "\n";
    }
  }

  void line(const std::string& s) {
    if (!on_) return;
    if (dirty_) std::cerr << "\r\033[K";
    dirty_ = false;
    std::cerr << s << "\n";
  }

 private:
  bool on_, tty_;
  int64_t epochs_, spe_, total_;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

void save(const std::string& path, Trainer& t, int64_t step) {
  nn::Checkpoint ck;
  ck.sections["model"] = t.method().state_dict();
  ck.sections["backbone"] = t.method().backbone().state_dict();
  ck.sections["optim"] = t.optimizer().state_dict();
  ck.rng["default"] = default_generator();
  ck.epoch = step / t.steps_per_epoch();
  ck.step = step;
  ck.config = t.config().to_toml();
  nn::save_checkpoint(path, ck);
}

}  // namespace

Config load_run_config(const std::string& path, const std::vector<std::string>& sets, const std::string& output) {
  Config cfg = pretrain_config();
  if (!path.empty()) cfg.load_file(path);
  for (const auto& s : sets) cfg.set(s);
  if (!output.empty()) cfg.set("run.output=" + toml_quote(output));
  resolve_defaults(cfg);
  return cfg;
}

// ---------------------------------------------------------------- Trainer

Trainer::Trainer(const Config& cfg, dist::Group* group) : cfg_(cfg) {
  resolve_defaults(cfg_);
  device_ = resolve_device(cfg_);
  dist::Group& base = group ? *group : dist::world();
  group_ = dist::make_group(cfg_.get_string("run.dist_backend"), base, device_.is_cuda() ? device_.index : -1);
  const int world = group_->size(), rank = group_->rank();
  dtype_ = cfg_.get_string("run.dtype") == "f64" ? DType::f64 : DType::f32;
  if (dtype_ == DType::f64 && !device_.is_cpu())
    fail("config: run.dtype = \"f64\" is for verification on the CPU; the run is on ", device_.str(),
         " (set run.device = \"cpu\")");
  precision_ = nn::parse_precision(cfg_.get_string("run.precision"));
  if (precision_.compute == DType::bf16 && device_.is_cpu())
    fail("config: run.precision = \"bf16\" needs a GPU (the CPU kernels compute in f32); the run is on the CPU: ",
         cuda::available() ? std::string("run.device = \"cpu\"") : cuda::unavailable_reason());
  const int64_t batch = cfg_.get_int("run.batch_size");
  if (batch % world != 0)
    fail("config: run.batch_size (", batch, ", the global batch) does not split into equal shares over ", world,
         " ranks; make it a multiple of ", world);
  const bool monitor = cfg_.get_int("run.knn_every") > 0;
  TrainSplit split;
  if (monitor)
    split = [&](const data::ImageSet& all) {
      // The monitor holds out the last labelled images and votes with the first ones.
      const Tensor labels = contiguous(all.labels);
      std::vector<int64_t> labelled;
      for (int64_t i = 0; i < all.size(); ++i)
        if (labels.data<int64_t>()[i] >= 0) labelled.push_back(i);
      const int64_t held = cfg_.get_int("data.heldout");
      if (static_cast<int64_t>(labelled.size()) <= held)
        fail("config: data.heldout is ", held, " but the training set has only ", labelled.size(),
             " labelled images; lower data.heldout or set run.knn_every = 0");
      std::vector<int64_t> held_idx(labelled.end() - held, labelled.end());
      std::vector<int64_t> bank_idx(labelled.begin(),
                                    labelled.begin() + std::min<int64_t>(cfg_.get_int("data.knn_bank"),
                                                                         static_cast<int64_t>(labelled.size()) - held));
      heldout_ = subset(all, held_idx);
      bank_ = subset(all, bank_idx);
      std::vector<bool> is_held(all.size(), false);
      for (int64_t i : held_idx) is_held[i] = true;
      std::vector<int64_t> keep;
      for (int64_t i = 0; i < all.size(); ++i)
        if (!is_held[i]) keep.push_back(i);
      return keep;
    };
  PairSource source = make_pair_source(cfg_, split);
  data::ImageSet images = std::move(source.images);
  std::optional<data::PairGenerator>& generator = source.generator;
  train_images_ = images.size();
  const Device view_device = cfg_.get_string("data.device") == "cuda" ? device_ : Device::cpu();
  if (cfg_.get_string("data.device") == "cuda" && device_.is_cpu())
    fail("config: data.device = \"cuda\" makes the views on the run's GPU, but the run is on the CPU (run.device)");
  if (generator->rows_per_epoch() < batch)
    fail("config: run.batch_size is ", batch, " but an epoch has only ", generator->rows_per_epoch(),
         " training rows (", images.size(), " images", monitor ? " after the held-out split" : "",
         "); lower run.batch_size");
  loader_ = std::make_unique<data::Loader>(images, std::move(*generator),
                                           data::LoaderConfig{.batch_size = batch, .drop_last = true, .prefetch = true, .threads = 1,
                                                              .device = view_device, .shard = rank, .shards = world});
  steps_per_epoch_ = loader_->batches_per_epoch();
  total_steps_ = cfg_.get_int("run.epochs") * steps_per_epoch_;

  method_ = make_method(cfg_);
  // Parameters, buffers, targets and queues move before the optimizer makes its state
  // beside them.
  if (!device_.is_cpu()) method_->to(device_);
  if (dtype_ != DType::f32) method_->to(dtype_);
  if (world > 1) {
    method_->set_process_group(group_.get());
    // Initial weights come from the seed on every rank; a difference means different code or data.
    dist::require_same(*group_, state_hash(), "the initial weights (same seed, different siam builds or configs?)");
  }
  const ssl::OptimRecipe recipe = optim_recipe(cfg_);
  optimizer_ = ssl::make_optimizer(*method_, recipe, batch);
  if (recipe.warmup_epochs >= cfg_.get_int("run.epochs"))
    fail("config: optimizer.warmup_epochs (", recipe.warmup_epochs, ") must be less than run.epochs (",
         cfg_.get_int("run.epochs"), ")");
  lr_ = std::make_unique<nn::CosineSchedule>(recipe.base_lr * static_cast<double>(batch) / 256.0,
                                             cfg_.get_double("optimizer.min_lr"), total_steps_,
                                             recipe.warmup_epochs * steps_per_epoch_, 0.0);
  wd_ = std::make_unique<nn::CosineSchedule>(recipe.weight_decay, recipe.final_weight_decay, total_steps_);
  clip_ = clip_recipe(cfg_);
  for (auto& [name, p] : method_->trainable_parameters()) params_.push_back(p);
  if (world > 1) {
    grad_group_ = group_->duplicate();
    reducer_ = std::make_unique<nn::GradReducer>(params_, *grad_group_, cfg_.get_double("run.bucket_mb"),
                                                 cfg_.get_bool("run.overlap_grad_reduce"));
  }
}

uint64_t Trainer::state_hash() const {
  uint64_t h = dist::fnv1a(nullptr, 0);
  for (const auto& [name, t] : method_->state_dict()) {
    const Tensor c = copy_to(t, Device::cpu(), t.dtype());
    h = dist::fnv1a(name.data(), name.size(), h);
    h = dist::fnv1a(c.raw_data(), c.nbytes(), h);
  }
  return h;
}

std::map<std::string, double> Trainer::step(const data::Batch& batch, int64_t step) {
  const ssl::Progress progress{.step = step, .steps_per_epoch = steps_per_epoch_, .total_steps = total_steps_};
  const double lr = (*lr_)(step), wd = (*wd_)(step);
  optimizer_->set_lr(lr);
  optimizer_->set_weight_decay(wd);
  optimizer_->zero_grad();
  nn::PrecisionScope precision(precision_);
  std::vector<Tensor> views = batch.views;
  if (!device_.is_cpu())
    for (Tensor& v : views)
      if (v.device() != device_) v = copy_to(v, device_, v.dtype());  // the GPU loader's views are already there
  if (dtype_ != DType::f32)
    for (Tensor& v : views) v = copy_to(v, v.device(), dtype_);
  if (method_->needs_labels()) {
    const Tensor& y = batch.labels;  // (N) i64 on the host
    const std::vector<double> v = y.defined() ? y.to_vector() : std::vector<double>{};
    if (v.empty() || *std::min_element(v.begin(), v.end()) < 0)
      fail("the ", method_name(cfg_), " method learns from labels, and the batch has unlabelled images (",
           cfg_.get_string("data.dataset"), "); use a labelled data set");
    method_->set_labels(device_.is_cpu() ? y : copy_to(y, device_, y.dtype()));
  }
  ssl::StepOutput out = method_->training_step(views, progress);
  // The metrics (scalars) come to the host in one copy, so a GPU step waits for the device
  // once here rather than once per metric; the loss must be known before the optimizer step.
  std::map<std::string, double> m;
  {
    NoGradGuard no_grad;
    std::vector<Tensor> scalars;
    for (const auto& [name, t] : out.metrics) {
      if (t.numel() != 1) fail("the ", method_name(cfg_), " step returned metric '", name, "' of shape ", shape_str(t.shape()), ", not a scalar");
      scalars.push_back(reshape(siam::to(t, DType::f64), {1}));
    }
    Tensor all = scalars.empty() ? Tensor() : contiguous(cat(scalars, 0));
    // Data parallel: the mean over ranks (the loss of the global batch; the same on every rank,
    // so every rank takes the same decisions, the non-finite stop below included).
    if (all.defined() && group_->size() > 1) {
      group_->all_reduce(all);
      all = mul(all, 1.0 / group_->size());
    }
    const std::vector<double> values =
        all.defined() ? copy_to(all, Device::cpu(), DType::f64).to_vector() : std::vector<double>{};
    size_t i = 0;
    for (const auto& [name, t] : out.metrics) m[name] = values[i++];
  }
  if (!std::isfinite(m.at("loss")))
    fail("step ", step + 1, " (epoch ", progress.epoch() + 1, "): the loss is ", m.at("loss"), " (", metric_str(m),
         "); stopped before the optimizer step. Lower optimizer.base_lr or set optimizer.clip_grad");
  if (reducer_) reducer_->backward(out.loss);
  else autograd::backward(out.loss);
  if (clip_.max_norm > 0) {
    if (clip_.per_parameter) {
      double sq = 0;
      for (const Tensor& p : params_) {
        if (!p.grad().defined()) continue;
        const double n = nn::clip_grad_norm({p}, clip_.max_norm);
        sq += n * n;
      }
      m["grad_norm"] = std::sqrt(sq);
    } else {
      m["grad_norm"] = nn::clip_grad_norm(params_, clip_.max_norm);
    }
  }
  optimizer_->step();
  method_->after_optimizer_step(progress);
  m["lr"] = lr;
  m["weight_decay"] = wd;
  return m;
}

std::optional<double> Trainer::knn_monitor() {
  if (heldout_.size() == 0) return std::nullopt;
  const Normalisation norm = normalisation(cfg_);
  const int size = static_cast<int>(cfg_.get_int("augment.crop_size"));
  nn::Module& backbone = method_->backbone();
  // Data parallel: each rank embeds a slice of the images and the slices are gathered.
  auto features = [&](const data::ImageSet& set) { return extract_features(backbone, set, norm, 256, size, *group_); };
  const Tensor bank = features(bank_);
  const Tensor held = features(heldout_);
  KnnOptions o;
  o.k = {std::min<int64_t>(20, bank_.size())};
  o.temperature = 0.07;
  return knn_eval(bank, bank_.labels, held, heldout_.labels, bank_.num_classes, o).at(0).top1;
}

// ---------------------------------------------------------------- pretrain

PretrainResult pretrain(const PretrainOptions& o) {
  Config cfg = load_run_config(o.config_path, o.sets, o.output);
  PretrainResult r;
  r.folder = run_folder(cfg);
  r.checkpoint = (fs::path(r.folder) / "checkpoint.safetensors").string();

  std::optional<nn::Checkpoint> ck;
  if (o.resume) {
    if (!fs::exists(r.checkpoint))
      fail("--resume: no checkpoint to resume in ", r.folder, " (", r.checkpoint, " does not exist)");
    ck = nn::load_checkpoint(r.checkpoint);
    // The checkpoint's config is the run's; --set still applies (e.g. more run.epochs).
    Config resumed = pretrain_config();
    resumed.load_string(ck->config, r.checkpoint + " (its config)");
    for (const auto& s : o.sets) resumed.set(s);
    if (!o.output.empty()) resumed.set("run.output=" + toml_quote(o.output));
    resolve_defaults(resumed);
    cfg = resumed;
  } else if (fs::exists(r.checkpoint)) {
    fail(r.folder, " already holds a run (", r.checkpoint,
         "); pass --resume to continue it, or --output (or run.name) to start another");
  }
  // Both a fresh run and its resumption use the config as read back from its text, so they
  // see the very same numbers.
  cfg = checkpoint_config(cfg.to_toml(), "the resolved config");
  dist::Group& world = o.group ? *o.group : dist::world();
  const bool lead = world.rank() == 0;  // only rank 0 writes files and prints
  {
    // Ranks started with different configs, --set flags or siam builds would not train one model.
    const std::string text = cfg.to_toml() + "\nsiam " + SIAM_VERSION;
    dist::require_same(world, dist::fnv1a(text.data(), text.size()), "the resolved config or the siam version");
  }
  apply_threads(cfg);
  const std::string mined = prepare_mined_neighbours(cfg);  // mines pairs.neighbours once, when asked
  Trainer t(cfg, &world);  // before the folder exists, so a config or data error leaves nothing behind

  if (lead) {
    std::error_code ec;
    fs::create_directories(r.folder, ec);
    if (ec) fail("cannot create the run folder ", r.folder, ": ", ec.message());
    const std::string path = (fs::path(r.folder) / "config.toml").string();
    std::ofstream f(path, std::ios::trunc);
    f << cfg.to_toml();
    if (!f) fail("cannot write ", path);
  }

  const int64_t spe = t.steps_per_epoch(), total = t.total_steps(), epochs = cfg.get_int("run.epochs");
  const int64_t log_every = cfg.get_int("run.log_every"), knn_every = cfg.get_int("run.knn_every");
  const int64_t ckpt_every = cfg.get_int("run.checkpoint_every");
  const int64_t views_per_step = cfg.get_int("run.batch_size") * t.loader().generator().num_views();
  // Each rank draws its dropout and drop-path masks from its own part of the stream.
  const uint64_t rank_offset = static_cast<uint64_t>(world.rank()) << 52;
  default_generator().set_state(static_cast<uint64_t>(cfg.get_int("run.seed")), kDropoutOffset + rank_offset);

  int64_t step = 0;
  if (ck) {
    if (ck->epoch != ck->step / spe)
      fail(r.checkpoint, ": written at step ", ck->step, " of epoch ", ck->epoch, ", which does not fit the ", spe,
           " steps per epoch of this config (did the data or run.batch_size change?)");
    try {
      t.method().load_state_dict(ck->section("model"));
      t.optimizer().load_state_dict(ck->section("optim"));
    } catch (const Error& e) {
      fail(r.checkpoint, ": does not fit the model of its config: ", e.what());
    }
    const Generator& g = ck->generator("default");
    default_generator().set_state(g.seed(), g.offset() + rank_offset);
    step = ck->step;
  }

  Console console(o.console && lead, epochs, spe, total);
  std::ostringstream intro;
  intro << (ck ? "resuming " : "pretraining ") << method_name(cfg) << " (" << t.method().name() << ", "
        << cfg.get_string("backbone.arch") << ", " << t.method().num_parameters() << " parameters) on "
        << cfg.get_string("data.dataset") << ": " << t.train_images() << " images, " << spe << " steps/epoch x "
        << epochs << " epochs; run folder " << r.folder;
  if (world.size() > 1)
    intro << "; " << world.size() << " ranks (" << t.group().backend(t.device()) << "), "
          << cfg.get_int("run.batch_size") / world.size() << " images a rank a step";
  if (ck) intro << "; from epoch " << ck->epoch << ", step " << ck->step;
  console.line(intro.str());
  if (!mined.empty()) console.line(mined);

  r.step = step;
  r.epoch = step / spe;
  if (step >= total) {
    r.finished = true;
    console.line("the run is already complete (step " + std::to_string(step) + " of " + std::to_string(total) + ")");
    return r;
  }

  // Fault injection for the tests of the failure path: SIAM_FAULT_INJECT="RANK:STEP" makes that
  // rank throw a siam::Error before that step (1-based).
  struct {
    int rank = -1;
    int64_t step = -1;
  } fault;
  if (const char* f = std::getenv("SIAM_FAULT_INJECT"))
    if (std::sscanf(f, "%d:%ld", &fault.rank, &fault.step) != 2)
      fail("SIAM_FAULT_INJECT must be RANK:STEP, e.g. 1:5, got '", f, "'");
  std::optional<MetricsLog> log;
  if (lead) log.emplace(r.folder, ck ? ck->step : -1);
  SigintGuard sigint;
  using clock = std::chrono::steady_clock;
  double ema_step_s = 0;
  int64_t last_saved = ck ? ck->step : -1;
  // Every rank stops at the same step: a Ctrl-C seen by any rank counts for all.
  auto stop_now = [&](int64_t s) {
    bool stop = g_interrupted.load();
    if (world.size() > 1) {
      Tensor flag = full({1}, stop ? 1.0 : 0.0, {DType::i32});
      world.all_reduce(flag, dist::ReduceOp::max);
      stop = flag.data<int32_t>()[0] != 0;
    }
    return stop || (o.stop_at_step >= 0 && s >= o.stop_at_step);
  };
  // Writes the checkpoint on rank 0 after checking that every rank holds the same weights.
  auto checkpoint = [&](int64_t s) {
    dist::require_same(world, t.state_hash(), "the weights at step " + std::to_string(s) + " (the ranks diverged)");
    if (lead) save(r.checkpoint, t, s);
  };

  for (int64_t epoch = step / spe; epoch < epochs; ++epoch) {
    const int64_t first = step - epoch * spe;
    if (first == 0) t.loader().start_epoch(epoch);
    const auto epoch_start = clock::now();
    double loss_sum = 0, std_sum = 0;
    int64_t n = 0;
    for (int64_t i = first; i < spe; ++i) {
      const auto t0 = clock::now();
      data::Batch batch;
      if (first == 0) {
        if (!t.loader().next(batch)) fail("loader: epoch ", epoch, " ended after ", i, " of ", spe, " batches");
      } else {
        batch = t.loader().batch(epoch, i);  // the rest of an epoch a checkpoint stopped in
      }
      std::map<std::string, double> m;
      try {
        if (fault.rank == world.rank() && fault.step == step + 1)
          fail("SIAM_FAULT_INJECT: an error injected at step ", step + 1, " (testing the failure path)");
        m = t.step(batch, step);
      } catch (const Error& e) {
        fail(e.what(), last_saved >= 0 ? "; the last checkpoint (step " + std::to_string(last_saved) + ") is kept: " +
                                              r.checkpoint
                                        : "; no checkpoint was written yet");
      }
      ++step;
      const double dt = std::chrono::duration<double>(clock::now() - t0).count();
      ema_step_s = ema_step_s == 0 ? dt : 0.9 * ema_step_s + 0.1 * dt;
      loss_sum += m.at("loss");
      if (m.count("embedding_std")) std_sum += m.at("embedding_std");
      ++n;
      const bool log_now = step % log_every == 0;
      if (log_now) {
        m["epoch"] = static_cast<double>(step) / spe;
        m["step_time_s"] = dt;
        m["views_per_s"] = views_per_step / dt;
        if (log) log->write("train", step, m);
      }
      console.step(step, m.at("loss"), m.at("lr"), views_per_step / ema_step_s, ema_step_s * (total - step), log_now);
      // A stop at an epoch's last step waits for the epoch's record and checkpoint below.
      if (stop_now(step) && i + 1 < spe) {
        checkpoint(step);
        r.step = step;
        r.epoch = step / spe;
        r.interrupted = true;
        console.line(std::string(g_interrupted.load() ? "interrupted" : "stopped") + " at step " + std::to_string(step) +
                     "; checkpoint saved to " + r.checkpoint + "; continue with --resume");
        return r;
      }
    }
    const double epoch_s = std::chrono::duration<double>(clock::now() - epoch_start).count();
    std::map<std::string, double> em{{"epoch", static_cast<double>(epoch + 1)},
                                     {"loss", loss_sum / n},
                                     {"time_s", epoch_s},
                                     {"views_per_s", views_per_step * n / epoch_s}};
    if (std_sum > 0) em["embedding_std"] = std_sum / n;
    const bool last = epoch + 1 == epochs;
    if (knn_every > 0 && ((epoch + 1) % knn_every == 0 || last)) {
      r.knn_top1 = t.knn_monitor();
      if (r.knn_top1) em["knn_top1"] = *r.knn_top1;
    }
    if (log) log->write("epoch", step, em);
    std::ostringstream os;
    os << "epoch " << epoch + 1 << "/" << epochs << ": loss " << std::setprecision(5) << em["loss"];
    if (em.count("embedding_std")) os << ", embedding std " << std::setprecision(3) << em["embedding_std"];
    if (em.count("knn_top1")) os << ", kNN top-1 " << std::fixed << std::setprecision(2) << em["knn_top1"] << "%";
    os << ", " << duration_str(epoch_s);
    if ((epoch + 1) % ckpt_every == 0 || last) {
      checkpoint(step);
      last_saved = step;
      os << ", checkpoint saved";
    }
    console.line(os.str());
    if (stop_now(step) && !last) {
      r.step = step;
      r.epoch = step / spe;
      r.interrupted = true;
      if (last_saved != step) checkpoint(step);
      console.line(std::string(g_interrupted.load() ? "interrupted" : "stopped") + " at step " + std::to_string(step) +
                   "; checkpoint saved to " + r.checkpoint + "; continue with --resume");
      return r;
    }
  }
  r.step = step;
  r.epoch = epochs;
  r.finished = true;
  console.line("done: " + r.checkpoint);
  return r;
}

void add_pretrain_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("pretrain", "Self-supervised pretraining from a TOML config (configs/*.toml)");
  auto o = std::make_shared<PretrainOptions>();
  auto help_config = std::make_shared<bool>(false);
  cmd->add_option("config", o->config_path, "the run's TOML config");
  cmd->add_option("--set", o->sets, "override a config key, e.g. --set optimizer.base_lr=0.5 (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_flag("--resume", o->resume, "continue the run in the run folder from its checkpoint");
  cmd->add_option("--output", o->output, "run folder (default: run.output, else runs/<run.name>)");
  cmd->add_option("--stop-at-step", o->stop_at_step,
                  "stop after this many steps with a checkpoint, as Ctrl-C does (resume later with --resume)");
  cmd->add_flag("--help-config", *help_config, "list every config key with its default and meaning");
  cmd->callback([o, help_config] {
    if (*help_config) {
      std::cout << pretrain_config().describe();
      return;
    }
    if (o->config_path.empty()) fail("pretrain: a config file is required, e.g. siam pretrain configs/simclr.toml");
    PretrainResult r = pretrain(*o);
    if (r.interrupted && g_interrupted.load()) throw CLI::RuntimeError(130);
  });
}

}  // namespace siam::apps
