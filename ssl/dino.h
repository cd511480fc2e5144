#pragma once
// DINO (Caron et al. 2021; facebookresearch/dino): a student (backbone + DINO head) matches the
// centred, sharpened output of an EMA teacher across multi-crop views. views = the global crops
// (cfg.global_crops of them, seen by the teacher and the student) followed by the local crops
// (student only). Consecutive views of one size go through the backbone together, as the
// official MultiCropWrapper does. A ResNet takes any crop size; a ViT any whose sides are
// multiples of its patch: smaller local crops get its position embedding resized to their patch
// grid (nn::ViT::tokens, DINO's interpolate_pos_encoding).
#include "nn/ema.h"
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct DinoConfig {
  BackboneConfig backbone{.arch = "vit_small", .drop_path = 0.1};  // the teacher gets drop_path 0
  DinoHeadConfig head;
  double student_temp = 0.1;
  double warmup_teacher_temp = 0.04;
  double teacher_temp = 0.07;               // the ViT-S recipe (the code's default is 0.04)
  int64_t warmup_teacher_temp_epochs = 30;  // linear 0.04 -> 0.07, then constant
  double center_momentum = 0.9;
  double base_momentum = 0.996;             // teacher EMA, cosine to 1
  int64_t freeze_last_layer_epochs = 1;     // the student's last layer gets no gradient before this epoch
  int64_t global_crops = 2;
  LossImpl loss_impl = LossImpl::fused;
  OptimRecipe optim{.optimizer = "adamw", .base_lr = 5e-4, .weight_decay = 0.04, .final_weight_decay = 0.4,
                    .momentum = 0.9, .warmup_epochs = 10};
};

class DINO : public Method {
 public:
  explicit DINO(const DinoConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "DINO"; }
  // AdamW groups: biases and norm parameters without weight decay (DINO's get_params_groups).
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;
  // Teacher EMA with teacher_momentum(progress), then
  // center = m center + (1 - m) mean(teacher outputs of this step) with m = center_momentum.
  void after_optimizer_step(const Progress& progress) override;
  double teacher_momentum(const Progress& progress) const;
  // np.linspace(warmup, final, W)[epoch] for epoch < W, then the final value.
  double teacher_temperature(int64_t epoch) const;
  // The official code evaluates the teacher.
  nn::Module& backbone() const override { return *teacher_backbone; }

  DinoConfig cfg;
  std::shared_ptr<DinoHead> head;
  nn::ModulePtr teacher_backbone;
  std::shared_ptr<DinoHead> teacher_head;
  Tensor center;  // (1, K) buffer "center"

 private:
  // Metrics: loss, teacher_temp, embedding_std (the student's L2-normalised bottleneck).
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
  std::unique_ptr<nn::EmaUpdater> ema_backbone_, ema_head_;
  Tensor batch_center_;  // (1, K) mean teacher output of the last step
};

}  // namespace siam::ssl
