// The scheduler on the shipped demo model: batched generations equal solo ones (with chunked
// prefill and with preemption), the prefix cache, cancellation freeing the cache, FCFS admission
// and the bounded queue.
#include "runtime/scheduler.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "model/kv_cache.h"
#include "runtime/generator.h"
#include "util/error.h"

namespace pensieve {
namespace {

std::shared_ptr<ModelInstance> load(EngineOptions o) {
  o.threads = 2;
  return ModelInstance::load(std::string(PENSIEVE_SOURCE_DIR) + "/models/pensieve-demo.gguf", o);
}

const char* kQuestions[] = {"What does the word library mean?", "What does happy mean?",
                            "What does ephemeral mean?", "What is the opposite of hot?",
                            "Define the word river.", "What does it mean to whisper?"};

GenerateRequest greedy(const ModelInstance& m, const std::string& q, int max_tokens) {
  GenerateRequest r;
  r.prompt = m.chat_tokens({{{"user", q}}, nullptr, true});
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

struct Answer {
  std::string text;
  GenerateResult result;
};

Answer run(const ModelInstance& m, const GenerateRequest& req) {
  Answer a;
  a.result = m.generate(req, [&](std::string_view t) {
    a.text += t;
    return true;
  });
  return a;
}

// Every question at once, each from its own thread.
std::vector<Answer> run_together(const ModelInstance& m, const std::vector<GenerateRequest>& reqs) {
  std::vector<Answer> out(reqs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < reqs.size(); ++i) threads.emplace_back([&, i] { out[i] = run(m, reqs[i]); });
  for (auto& t : threads) t.join();
  return out;
}

std::vector<Answer> solo_answers(int max_tokens, std::vector<GenerateRequest>* reqs_out, KvType kv = KvType::F16) {
  EngineOptions o;
  o.max_running = 1;
  o.kv_type = kv;
  auto m = load(o);
  std::vector<Answer> out;
  for (const char* q : kQuestions) {
    reqs_out->push_back(greedy(*m, q, max_tokens));
    out.push_back(run(*m, reqs_out->back()));
  }
  return out;
}

TEST(Scheduler, BatchedGenerationsEqualSoloOnes) {
  std::vector<GenerateRequest> reqs;
  const auto solo = solo_answers(40, &reqs);
  for (int batch_tokens : {512, 7}) {  // 7: prompts prefilled in chunks beside decoding sequences
    SCOPED_TRACE(batch_tokens);
    EngineOptions o;
    o.max_batch_tokens = batch_tokens;
    auto m = load(o);
    const auto together = run_together(*m, reqs);
    m->service()->wait_idle(std::chrono::seconds(10));  // the step that sent the last answer has ended
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(together[i].text, solo[i].text) << kQuestions[i];
      EXPECT_EQ(together[i].result.completion_tokens, solo[i].result.completion_tokens);
      EXPECT_EQ(together[i].result.reason, solo[i].result.reason);
    }
    const ServiceStats s = m->service()->stats();
    EXPECT_EQ(s.running, 0);
    EXPECT_EQ(s.kv_blocks_used, 0);  // every block released (cached ones are not in use)
    EXPECT_GT(s.steps, 0);
  }
}

TEST(Scheduler, PreemptionWhenTheCacheIsFullKeepsOutputs) {
  std::vector<GenerateRequest> reqs;
  const auto solo = solo_answers(60, &reqs);
  EngineOptions o;
  o.context = 128;
  auto probe = load(o);
  // Room for one full context and a little more: six sequences of ~80 positions cannot all fit.
  o.kv_cache_bytes = KvPool::block_bytes(probe->config(), 16, KvType::F16) * 12;
  auto m = load(o);
  const auto together = run_together(*m, reqs);
  m->service()->wait_idle(std::chrono::seconds(10));
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(together[i].text, solo[i].text) << kQuestions[i];
  const ServiceStats s = m->service()->stats();
  EXPECT_GT(s.preemptions, 0);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.kv_blocks_total, 12);
}

// The 8-bit cache: the same bytes hold about twice the blocks, and batching still changes nothing.
TEST(Scheduler, Q8CacheHoldsMoreBlocksAndBatchesAsSolo) {
  std::vector<GenerateRequest> reqs;
  const auto solo = solo_answers(40, &reqs, KvType::Q8);
  EngineOptions o;
  o.context = 128;
  auto probe = load(o);
  const ModelConfig& cfg = probe->config();
  o.kv_cache_bytes = KvPool::block_bytes(cfg, 16, KvType::F16) * 24;
  o.kv_type = KvType::Q8;
  auto m = load(o);
  const auto together = run_together(*m, reqs);
  m->service()->wait_idle(std::chrono::seconds(10));
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(together[i].text, solo[i].text) << kQuestions[i];
  const ServiceStats s = m->service()->stats();
  EXPECT_EQ(s.kv_blocks_total, int(o.kv_cache_bytes / KvPool::block_bytes(cfg, 16, KvType::Q8)));
  EXPECT_GT(s.kv_blocks_total, 24 * 3 / 2);
}

TEST(Scheduler, PrefixCacheServesARepeatedPrompt) {
  auto m = load({});
  GenerateRequest req = greedy(*m, std::string(200, 'a') + " What does happy mean?", 12);
  ASSERT_GT(req.prompt.size(), 40u);
  const Answer first = run(*m, req);
  const Answer second = run(*m, req);
  EXPECT_EQ(first.result.cached_tokens, 0);
  // Every full block but the one holding the last prompt token (computed for its logits).
  EXPECT_EQ(second.result.cached_tokens, int((req.prompt.size() - 1) / 16 * 16));
  EXPECT_EQ(second.text, first.text);
  // A prompt sharing only the beginning reuses only the blocks of that beginning.
  GenerateRequest other = req;
  other.prompt[20] = other.prompt[20] == 5 ? 6 : 5;
  EXPECT_EQ(run(*m, other).result.cached_tokens, 16);
  m->service()->wait_idle(std::chrono::seconds(10));
  const ServiceStats s = m->service()->stats();
  EXPECT_EQ(s.cached_prompt_tokens, second.result.cached_tokens + 16);
  EXPECT_GT(s.kv_blocks_cached, 0);
}

// Collects a job's events for tests that drive the service directly.
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<GenerationEvent::Kind> kinds;
  GenerationEvent last;
  bool done = false;
  std::function<void(const GenerationEvent&)> on_event;

  std::shared_ptr<GenerationJob> job(GenerateRequest req) {
    auto j = std::make_shared<GenerationJob>();
    j->request = std::move(req);
    j->sink = [this](GenerationEvent&& e) {
      if (on_event) on_event(e);
      std::lock_guard lock(mu);
      kinds.push_back(e.kind);
      if (e.kind == GenerationEvent::Kind::Done || e.kind == GenerationEvent::Kind::Failed) {
        last = e;
        done = true;
        cv.notify_all();
      }
    };
    return j;
  }
  void wait() {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; }));
  }
};

TEST(Scheduler, CancellingFreesTheSequenceAtTheNextStep) {
  auto m = load({});
  auto svc = m->service();
  Recorder r;
  GenerateRequest req = greedy(*m, "What does happy mean?", 1000);
  req.stop_at_eos = false;
  auto job = r.job(req);
  std::atomic<int> texts{0};
  r.on_event = [&](const GenerationEvent& e) {
    if (e.kind == GenerationEvent::Kind::Text && ++texts == 3) {
      EXPECT_EQ(svc->running(), 1);
      EXPECT_GT(svc->stats().kv_blocks_used, 0);
      job->cancelled = true;
    }
  };
  ASSERT_TRUE(svc->submit(job));
  r.wait();
  EXPECT_EQ(r.last.kind, GenerationEvent::Kind::Done);
  EXPECT_EQ(r.last.result.reason, StopReason::Cancelled);
  EXPECT_EQ(texts.load(), 3);  // nothing generated after the step that saw the cancellation
  svc->wait_idle(std::chrono::seconds(10));
  EXPECT_EQ(svc->running(), 0);
  EXPECT_EQ(svc->stats().kv_blocks_used, 0);
}

// The gauges a client reads after its answer (/metrics, wait_idle) no longer count its sequence:
// they are updated before a sequence's end is delivered, not only after the step.
TEST(Scheduler, AnEndedSequenceIsUncountedBeforeItsEndIsDelivered) {
  auto m = load({});
  auto svc = m->service();
  for (int max_tokens : {0, 3}) {
    Recorder r;
    ServiceStats at_end;
    r.on_event = [&](const GenerationEvent& e) {
      if (e.kind == GenerationEvent::Kind::Done) at_end = svc->stats();
    };
    ASSERT_TRUE(svc->submit(r.job(greedy(*m, "What does happy mean?", max_tokens))));
    r.wait();
    ASSERT_EQ(r.last.kind, GenerationEvent::Kind::Done);
    EXPECT_EQ(at_end.running, 0) << max_tokens;
    EXPECT_EQ(at_end.waiting, 0) << max_tokens;
    EXPECT_EQ(at_end.kv_blocks_used, 0) << max_tokens;
  }
}

TEST(Scheduler, AdmitsFirstComeFirstServedAndBoundsTheQueue) {
  EngineOptions o;
  o.max_running = 1;
  o.max_waiting = 2;
  auto m = load(o);
  auto svc = m->service();
  std::mutex mu;
  std::vector<int> started;
  std::vector<std::unique_ptr<Recorder>> recs;
  std::vector<std::shared_ptr<GenerationJob>> jobs;
  for (int i = 0; i < 4; ++i) {
    recs.push_back(std::make_unique<Recorder>());
    recs.back()->on_event = [&, i](const GenerationEvent& e) {
      if (e.kind != GenerationEvent::Kind::Started) return;
      std::lock_guard lock(mu);
      started.push_back(i);
    };
    GenerateRequest req = greedy(*m, kQuestions[i], i == 0 ? 400 : 4);
    req.stop_at_eos = false;
    jobs.push_back(recs.back()->job(req));
  }
  ASSERT_TRUE(svc->submit(jobs[0]));
  while (svc->running() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(svc->submit(jobs[1]));
  ASSERT_TRUE(svc->submit(jobs[2]));
  EXPECT_FALSE(svc->submit(jobs[3]));  // two already wait
  EXPECT_EQ(svc->waiting(), 2);
  jobs[0]->cancelled = true;
  for (int i = 0; i < 3; ++i) recs[size_t(i)]->wait();
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(recs[1]->last.result.completion_tokens, 4);
}

TEST(Scheduler, InvalidPromptsFailWithAReason) {
  EngineOptions o;
  o.context = 64;
  auto m = load(o);
  Recorder empty, too_long;
  ASSERT_TRUE(m->service()->submit(empty.job(GenerateRequest{})));
  GenerateRequest big;
  big.prompt.assign(64, 1);
  ASSERT_TRUE(m->service()->submit(too_long.job(big)));
  empty.wait();
  too_long.wait();
  EXPECT_EQ(empty.last.kind, GenerationEvent::Kind::Failed);
  EXPECT_EQ(empty.last.fail, FailKind::InvalidRequest);
  EXPECT_EQ(too_long.last.fail, FailKind::InvalidRequest);
  EXPECT_NE(too_long.last.message.find("context of 64"), std::string::npos) << too_long.last.message;
  EXPECT_THROW(m->generate(GenerateRequest{}, [](std::string_view) { return true; }), Error);
}

}  // namespace
}  // namespace pensieve
