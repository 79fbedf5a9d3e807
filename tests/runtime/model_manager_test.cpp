// The runtime's ModelManager: loads on demand, LRU unloading under max_loaded_models and
// max_model_memory, keep_alive expiry, one load for concurrent requests, a failed load that
// leaves the others serving, and a model unloaded while in use that is freed only after its lease.
#include "runtime/model_manager.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "runtime/scheduler.h"
#include "util/error.h"

using namespace pensieve;
using namespace std::chrono_literals;

namespace {

class IdleService : public GenerationService {
 public:
  bool submit(std::shared_ptr<GenerationJob>) override { return false; }
  int waiting() const override { return 0; }
  int running() const override { return 0; }
  ServiceStats stats() const override { return {}; }
  void cancel_all() override {}
  void wait_idle(std::chrono::milliseconds) override {}
};

struct Log {
  std::mutex mu;
  std::vector<std::string> events;  // "load X", "free X"
  void add(std::string e) {
    std::lock_guard lock(mu);
    events.push_back(std::move(e));
  }
  std::vector<std::string> get() {
    std::lock_guard lock(mu);
    return events;
  }
};

class CountedModel : public ManagedModel {
 public:
  CountedModel(std::string name, uint64_t bytes, Log& log) : name_(std::move(name)), bytes_(bytes), log_(log) {}
  ~CountedModel() override { log_.add("free " + name_); }
  GenerationService& service() const override { return service_; }
  uint64_t memory_bytes() const override { return bytes_; }

 private:
  std::string name_;
  uint64_t bytes_;
  Log& log_;
  mutable IdleService service_;
};

struct Fixture {
  explicit Fixture(ModelLimits limits, std::vector<std::string> names = {"A", "B", "C"}, uint64_t bytes = 100)
      : manager([this, bytes](const ModelSource& s) -> std::shared_ptr<ManagedModel> {
          if (load_delay.count()) std::this_thread::sleep_for(load_delay);
          if (s.name == fail) throw Error(s.path + ": truncated file");
          log.add("load " + s.name);
          return std::make_shared<CountedModel>(s.name, bytes, log);
        }, limits) {
    for (const auto& n : names) manager.add_source({n, "/models/" + n + ".gguf", {}, {}});
  }
  std::vector<std::string> loaded() {
    std::vector<std::string> out;
    for (const auto& i : manager.loaded()) out.push_back(i.name);
    return out;
  }
  Log log;
  std::string fail;
  std::chrono::milliseconds load_delay{0};
  ModelManager manager;
};

}  // namespace

TEST(ModelManager, LeastRecentlyUsedIsUnloadedBeyondMaxLoadedModels) {
  ModelLimits limits;
  limits.max_loaded_models = 2;
  Fixture f(limits);
  for (const char* n : {"A", "B", "C", "A"}) ASSERT_TRUE(f.manager.acquire(n).model()) << n;
  // Room is made before a load, so each unload comes just before the load that needed it.
  EXPECT_EQ(f.log.get(), (std::vector<std::string>{"load A", "load B", "free A", "load C", "free B", "load A"}));
  EXPECT_EQ(f.loaded(), (std::vector<std::string>{"A", "C"}));
  auto c = f.manager.counters();
  EXPECT_EQ(c["A"].loads, 2);
  EXPECT_EQ(c["A"].unloads["lru"], 1);
  EXPECT_EQ(c["B"].unloads["lru"], 1);
  EXPECT_EQ(c["C"].unloads.size(), 0u);
}

TEST(ModelManager, AModelInUseIsNotFreedUnderItsRequest) {
  ModelLimits limits;
  limits.max_loaded_models = 1;
  Fixture f(limits);
  ModelLease a = f.manager.acquire("A");
  ModelLease b = f.manager.acquire("B");  // A is unloaded (the only candidate) but still held
  EXPECT_EQ(f.loaded(), (std::vector<std::string>{"B"}));
  EXPECT_EQ(f.log.get(), (std::vector<std::string>{"load A", "load B"}));
  a = ModelLease();
  EXPECT_EQ(f.log.get().back(), "free A");
}

TEST(ModelManager, IdleModelsGoBeforeBusyOnes) {
  ModelLimits limits;
  limits.max_loaded_models = 2;
  Fixture f(limits);
  ModelLease a = f.manager.acquire("A");  // older, but in use
  f.manager.acquire("B");
  f.manager.acquire("C");
  EXPECT_EQ(f.loaded(), (std::vector<std::string>{"A", "C"}));
}

TEST(ModelManager, MemoryLimitUnloadsUntilTheNewModelFits) {
  ModelLimits limits;
  limits.max_model_memory_bytes = 250;  // two models of 100 bytes
  Fixture f(limits);
  f.manager.acquire("A");
  f.manager.acquire("B");
  f.manager.acquire("C");
  EXPECT_EQ(f.loaded(), (std::vector<std::string>{"B", "C"}));
  EXPECT_EQ(f.manager.counters()["A"].unloads["memory"], 1);
}

TEST(ModelManager, KeepAliveUnloadsAnIdleModel) {
  ModelLimits limits;
  limits.keep_alive = 150ms;
  Fixture f(limits);
  {
    ModelLease a = f.manager.acquire("A");
    std::this_thread::sleep_for(300ms);  // in use: not expired however long it runs
    EXPECT_EQ(f.loaded().size(), 1u);
    EXPECT_FALSE(f.manager.loaded()[0].expires_unix.has_value());
  }
  ASSERT_TRUE(f.manager.loaded()[0].expires_unix.has_value());
  std::this_thread::sleep_for(600ms);
  EXPECT_TRUE(f.loaded().empty());
  EXPECT_EQ(f.manager.counters()["A"].unloads["expired"], 1);
  EXPECT_EQ(f.log.get().back(), "free A");
}

TEST(ModelManager, RequestKeepAliveOverridesTheDefault) {
  Fixture f(ModelLimits{});  // default: never
  f.manager.acquire("A", 0ms);  // Ollama's keep_alive 0: unload once the request is done
  EXPECT_TRUE(f.loaded().empty());
  f.manager.acquire("B");
  EXPECT_EQ(f.loaded(), (std::vector<std::string>{"B"}));
  EXPECT_FALSE(f.manager.loaded()[0].expires_unix.has_value());
}

TEST(ModelManager, ConcurrentRequestsShareOneLoad) {
  Fixture f(ModelLimits{});
  f.load_delay = 100ms;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] { ok += bool(f.manager.acquire("A")); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 8);
  EXPECT_EQ(f.manager.counters()["A"].loads, 1);
}

TEST(ModelManager, AFailedLoadNamesTheFileAndOthersKeepServing) {
  Fixture f(ModelLimits{});
  f.manager.acquire("A");
  f.fail = "B";
  try {
    f.manager.acquire("B");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/models/B.gguf: truncated file"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(f.manager.try_acquire("A"));
  EXPECT_FALSE(f.manager.try_acquire("B"));
  EXPECT_EQ(f.manager.counters()["B"].load_failures, 1);
  EXPECT_THROW(f.manager.acquire("nope"), Error);
}

TEST(ModelManager, ParseKeepAlive) {
  EXPECT_EQ(parse_keep_alive("5m"), 300000ms);
  EXPECT_EQ(parse_keep_alive("1h30m"), 5400000ms);
  EXPECT_EQ(parse_keep_alive("30"), 30000ms);
  EXPECT_EQ(parse_keep_alive("250ms"), 250ms);
  EXPECT_EQ(parse_keep_alive("0"), 0ms);
  EXPECT_LT(parse_keep_alive("-1").count(), 0);
  EXPECT_THROW(parse_keep_alive("soon"), Error);
  EXPECT_THROW(parse_keep_alive("5x"), Error);
  EXPECT_THROW(parse_keep_alive(""), Error);
}
