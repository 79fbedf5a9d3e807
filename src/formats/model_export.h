// A loaded model (any format) written as a GGUF file that llama.cpp-compatible tools read: the
// canonical tensors re-typed by a quantization recipe, the `llama` Q/K row permutation applied to
// weights in Hugging Face order, and rope factors written as the tensors GGUF readers expect.
#pragma once
#include <functional>
#include <string>

#include "formats/gguf_export.h"
#include "formats/model_loader.h"

namespace pensieve {

// The tensors to write for `m` under `r`, filled from m's weights (one slice of rows at a time).
std::vector<ExportTensor> model_export_tensors(const LoadedModel& m, const QuantRecipe& r);

// Writes `m` to `out_path`. `extra_metadata` adds keys (the tokenizer) before the header is written;
// bos/eos ids from the config are written when it sets none.
void write_model_gguf(const LoadedModel& m, const QuantRecipe& r, const std::string& out_path,
                      const std::function<void(GgufWriter&)>& extra_metadata, int threads);

// GGUF row `r` of a `llama` Q or K projection holds Hugging Face row permute_qk_row(r, head_dim):
// the rotate-half pairs (i, i + hd/2) of each head become adjacent (2i, 2i + 1).
int64_t permute_qk_row(int64_t r, int64_t head_dim);

}  // namespace pensieve
