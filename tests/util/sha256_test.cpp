#include "util/sha256.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

using pensieve::Sha256;
using pensieve::sha256_hex;

TEST(Sha256, KnownVectors) {  // FIPS 180-4 examples
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                       "mnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotForEverySplit) {
  std::mt19937 rng(7);
  std::string data(300, '\0');
  for (char& c : data) c = char(rng());
  for (size_t len : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 119u, 128u, 300u}) {
    const std::string msg = data.substr(0, len);
    const std::string want = sha256_hex(msg);
    for (size_t cut = 0; cut <= len; cut += 7) {
      Sha256 h;
      h.update(msg.data(), cut);
      h.update(msg.data() + cut, len - cut);
      EXPECT_EQ(h.finish_hex(), want) << "length " << len << " split at " << cut;
    }
    Sha256 bytewise;
    for (char c : msg) bytewise.update(&c, 1);
    EXPECT_EQ(bytewise.finish_hex(), want) << "length " << len << " byte by byte";
  }
}

TEST(Sha256, FinishResets) {
  Sha256 h;
  h.update("abc", 3);
  h.finish();
  h.update("abc", 3);
  EXPECT_EQ(h.finish_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
