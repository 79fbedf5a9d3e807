#include "model/rope.h"

#include <cmath>

namespace pensieve {

RopeTable::RopeTable(const RopeConfig& cfg, bool long_context)
    : style_(cfg.style), n_rot_(cfg.n_rot), mscale_(1.0f) {
  const int half = n_rot_ / 2;
  inv_freq_.resize(half);
  for (int i = 0; i < half; ++i)
    inv_freq_[i] = float(1.0 / std::pow(double(cfg.theta), double(2 * i) / double(n_rot_)));

  switch (cfg.scaling) {
    case RopeScaling::None:
      break;
    case RopeScaling::Linear:
      for (float& f : inv_freq_) f /= cfg.factor;
      break;
    case RopeScaling::Llama3: {
      // Low frequencies are slowed by `factor`, high ones kept, and the band between blended.
      const double orig = cfg.original_ctx;
      const double low_wavelen = orig / cfg.low_freq_factor;
      const double high_wavelen = orig / cfg.high_freq_factor;
      for (float& f : inv_freq_) {
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen < high_wavelen) continue;
        if (wavelen > low_wavelen) {
          f = float(f / cfg.factor);
        } else {
          const double smooth = (orig / wavelen - cfg.low_freq_factor) /
                                (cfg.high_freq_factor - cfg.low_freq_factor);
          f = float((1.0 - smooth) * f / cfg.factor + smooth * f);
        }
      }
      break;
    }
    case RopeScaling::LongRope: {
      const std::vector<float>& ext = long_context ? cfg.long_factor : cfg.short_factor;
      for (int i = 0; i < half && i < int(ext.size()); ++i) inv_freq_[i] /= ext[i];
      mscale_ = cfg.attn_factor;
      break;
    }
  }
}

void RopeTable::apply(float* x, int n_heads, int head_dim, int pos) const {
  const int half = n_rot_ / 2;
  // cos/sin computed once per position for all heads; float32 like the reference implementation.
  float cs[512], sn[512];
  for (int i = 0; i < half; ++i) {
    const float angle = float(pos) * inv_freq_[i];
    cs[i] = std::cos(angle) * mscale_;
    sn[i] = std::sin(angle) * mscale_;
  }
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + size_t(h) * head_dim;
    if (style_ == RopeStyle::RotateHalf) {
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
      }
    } else {
      for (int i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * cs[i] - b * sn[i];
        v[2 * i + 1] = b * cs[i] + a * sn[i];
      }
    }
  }
}

}  // namespace pensieve
