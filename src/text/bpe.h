// The merge loop shared by both BPE flavours: a piece starts as one symbol per character and the
// best adjacent pair is merged until none is left. Symbols form a linked list and candidate pairs a
// priority queue, so a piece of n characters costs O(n log n), not O(n^2).
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "text/vocab.h"

namespace pensieve {

// Appends the ids of one pre-tokenized piece. Characters that no token covers become byte tokens
// when the vocabulary has them (byte fallback) and the unknown token otherwise.
void bpe_encode_piece(const Vocab& vocab, std::string_view piece, std::vector<int32_t>& out);

}  // namespace pensieve
